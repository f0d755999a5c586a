// Command sluice runs the sluice download center: the all-in-one (serve), each
// production role on its own (ingress, worker, edge), and the client commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gin-gonic/gin"
)

func main() {
	// Gin's mode is its global: set once, before any router is built. Release mode
	// keeps its debug lines about every route out of the logs.
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful shutdown; a second one ends the process at once.
	go func() { <-ctx.Done(); stop() }()
	err := Run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "sluice:", ee.err)
		}
		return ee.code
	default:
		fmt.Fprintln(os.Stderr, "sluice:", err)
		return 1
	}
}
