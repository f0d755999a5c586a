package objstore

import (
	"testing"

	"go.uber.org/goleak"
)

// Stores, breakers and the readers they return leave no goroutine behind once the
// tests' servers are stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
