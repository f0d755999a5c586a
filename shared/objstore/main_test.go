package objstore

import (
	"testing"

	"go.uber.org/goleak"
)

// Stores, breakers and the readers they return leave no goroutine behind (idle HTTP connections are closed by the tests that open them).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
