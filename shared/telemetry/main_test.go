package telemetry

import (
	"testing"

	"go.uber.org/goleak"
)

// The exporters and providers the tests start are shut down with them: no goroutine
// outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
