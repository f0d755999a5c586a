package ingress_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: servers, clients and the ingress's own
// goroutines (readiness checks, body deadlines) are gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
