package ingress_test

import (
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"
)

// Every test stops what it started: servers, clients and the ingress's own
// goroutines (readiness checks, body deadlines) are gone when the tests end. Gin runs
// in release mode, as cmd/sluice sets it once for the process.
func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	goleak.VerifyTestMain(m)
}
