package main

import (
	"reflect"
	"runtime"
	"slices"
	"testing"
)

// serve is every role in one process: it runs each component some role runs, and
// every server command runs at least one.
func TestServeRunsEveryRolesComponents(t *testing.T) {
	name := func(f newComponent) string { return runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name() }
	var serve []string
	for _, f := range roleComponents[roleServe] {
		serve = append(serve, name(f))
	}
	for _, r := range serverRoles {
		if len(roleComponents[r]) == 0 {
			t.Errorf("sluice %s runs no component", r)
		}
		for _, f := range roleComponents[r] {
			if !slices.Contains(serve, name(f)) {
				t.Errorf("sluice %s runs %s, which serve does not", r, name(f))
			}
		}
	}
}
