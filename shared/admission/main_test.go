package admission_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Ledger.WatchLimits ends with its context, and the tests close their Redis and NATS
// clients: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
