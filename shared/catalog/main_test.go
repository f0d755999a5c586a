package catalog_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The aliases' watch of the entries bucket ends with its context, and the tests close
// their clients: no goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
