package fleet_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Member.Run ends with its context: no heartbeat outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
