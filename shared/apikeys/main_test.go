package apikeys_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The key store starts no goroutine; the NATS connections the tests open are closed
// with them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
