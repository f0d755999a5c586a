package workers_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The workers stop every goroutine they start (consumers, admit and sweep loops, the
// ledger's refill) when their context ends: none is left when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
