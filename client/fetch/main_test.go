package fetch

import (
	"testing"

	"go.uber.org/goleak"
)

// Download.Run waits for its part workers before it returns: no goroutine outlives
// the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
