package client

import (
	"testing"

	"go.uber.org/goleak"
)

// A call's retries end when it returns, and the tests close their httptest servers: no
// goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
