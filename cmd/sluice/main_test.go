package main

import (
	"testing"

	"go.uber.org/goleak"
)

// The servers, clients and downloads the tests start are stopped with them: no
// goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
