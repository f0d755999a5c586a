package connlimit_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The limiter starts no goroutine; the listeners and connections the tests open are
// closed with them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
