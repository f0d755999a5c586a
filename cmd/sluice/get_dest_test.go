package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sluice get refuses an output it could not write before it takes a ticket: nobody
// waits in line to learn that. A directory given with -o receives the file.
func TestGetChecksTheOutputBeforeTakingATicket(t *testing.T) {
	data := []byte("release bytes")
	dir := t.TempDir()
	existing := filepath.Join(dir, "app.bin")
	if err := os.WriteFile(existing, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	notADir := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "occupied"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "occupied", "app.bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, output string
		force        bool
		want         string
	}{
		{"existing file", existing, false, "already exists; use --force"},
		{"missing directory", filepath.Join(dir, "no-such-dir", "app.bin"), false, "is not a directory"},
		{"missing target directory", filepath.Join(dir, "no-such-dir") + "/", false, "no such directory"},
		{"parent is a file", filepath.Join(notADir, "app.bin"), false, "is not a directory"},
		{"target directory holds a directory of that name", filepath.Join(dir, "occupied"), false, "is a directory"},
		{"--force does not replace a directory", filepath.Join(dir, "occupied"), true, "is a directory"},
		{"special file", os.DevNull, true, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newOutageServer(t, data)
			cfg := &getConfig{
				clientConfig: clientConfig{Server: s.url, Timeout: 5 * time.Second},
				Output:       tc.output, Force: tc.force, Connections: 1, Verify: "auto", Interval: time.Hour,
				StallTimeout: 10 * time.Second,
			}
			var stdout, stderr bytes.Buffer
			err := runGet(t.Context(), cfg, "rel/app.bin", &stdout, &stderr, func(string) string { return "" })
			if ee, ok := errors.AsType[*exitError](err); !ok || ee.code != exitFailure || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want exit 1 saying %q", err, tc.want)
			}
			if s.creates != 0 {
				t.Fatalf("%d tickets taken for an output that cannot be written", s.creates)
			}
		})
	}

	t.Run("into a target directory", func(t *testing.T) {
		s := newOutageServer(t, data)
		target := filepath.Join(t.TempDir(), "downloads")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, output := range []string{target, target + "/"} {
			cfg := &getConfig{
				clientConfig: clientConfig{Server: s.url, Timeout: 5 * time.Second},
				Output:       output, Force: true, Connections: 1, Verify: "auto", Interval: time.Hour,
				StallTimeout: 10 * time.Second,
			}
			var stdout, stderr bytes.Buffer
			if err := runGet(t.Context(), cfg, "rel/app.bin", &stdout, &stderr, func(string) string { return "" }); err != nil {
				t.Fatalf("-o %s: %v\n%s", output, err, stderr.String())
			}
			if got, err := os.ReadFile(filepath.Join(target, "app.bin")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("-o %s: %s/app.bin holds %q (%v), want the object", output, target, got, err)
			}
		}
	})
}
