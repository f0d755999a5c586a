package redisbreaker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The breaker starts no goroutine of its own; the Redis clients the tests open are
// closed with them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
