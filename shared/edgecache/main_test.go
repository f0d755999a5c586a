package edgecache

import (
	"testing"

	"go.uber.org/goleak"
)

// Fills and the check of the copies found at start are goroutines of the cache: every test closes what it
// opened, and none is left when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
