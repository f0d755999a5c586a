package queue_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The connections and consumers each test opens are closed when it ends: no NATS
// client or server goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
