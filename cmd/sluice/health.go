package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// The image is distroless: no shell, curl or wget for a container healthcheck, so the
// binary probes itself. `sluice health <role>` reads the role's listen address the way
// the role does (its flag's SLUICE_* variable, else the flag's default) and GETs its
// /readyz on loopback.

// healthListenFlag names the flag holding the listener that serves a role's probes.
var healthListenFlag = map[role]string{
	roleServe:   "ingress-addr",
	roleIngress: "ingress-addr",
	roleWorker:  "metrics-addr",
	roleEdge:    "edge-addr",
}

func healthCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice health", flag.ContinueOnError)
	target := fs.String("url", "", "URL to GET instead of the role's probe on loopback")
	path := fs.String("path", "/readyz", "probe path on the role's listener: /readyz (ready for traffic) or /healthz (alive)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	return &ffcli.Command{
		Name:       "health",
		ShortUsage: "sluice health [flags] serve|ingress|worker|edge  |  sluice health --url URL",
		ShortHelp:  "probe a running role (container healthchecks): exit 0 if it answers 2xx, 1 otherwise",
		LongHelp: "GETs the role's /readyz on 127.0.0.1 at the port its listen address setting\n" +
			"(SLUICE_INGRESS_ADDR, SLUICE_METRICS_ADDR for workers, SLUICE_EDGE_ADDR) gives,\n" +
			"as the role itself reads it. Any other answer, or none within --timeout, exits 1\n" +
			"with the status and the start of the body on stderr.",
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			u := *target
			switch {
			case u != "" && len(args) == 0:
			case u == "" && len(args) == 1:
				var err error
				if u, err = probeURL(args[0], *path, os.Getenv); err != nil {
					return &exitError{exitUsage, err}
				}
			default:
				return &exitError{exitUsage, errors.New("health takes a role (serve, ingress, worker, edge) or --url, not both")}
			}
			if err := probe(ctx, u, *timeout); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
}

// probeURL is where a role started with the environment getenv serves path.
func probeURL(roleName, path string, getenv func(string) string) (string, error) {
	var r role
	var flagName string
	for cand, name := range healthListenFlag {
		if cand.String() == roleName {
			r, flagName = cand, name
		}
	}
	if flagName == "" {
		return "", fmt.Errorf("unknown role %q: use serve, ingress, worker or edge", roleName)
	}
	addr := getenv(envName(flagName))
	if addr == "" {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		registerServerFlags(fs, r)
		addr = fs.Lookup(flagName).DefValue
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("%s=%q is not a listen address with a port", envName(flagName), addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // listening on every interface: loopback is one of them
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

func probe(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
