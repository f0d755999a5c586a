package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// The process's open-files limit. Go raises the soft RLIMIT_NOFILE to the hard limit
// (less one) by itself before main runs (syscall/rlimit.go, since Go 1.19), and gives
// child processes the original back: so nothing is raised here, only told. What it
// cannot raise is the hard limit; under a low one, the per-address cap
// (--max-conns-per-ip) is what keeps one client from taking every descriptor.
func logOpenFiles(log *slog.Logger, maxPerIP int) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("could not read the open-files limit", "err", err)
		return
	}
	log.Info("open files", "soft_limit", lim.Cur, "hard_limit", lim.Max, "max_conns_per_ip", maxPerIP)
	if lim.Cur < 4096 {
		log.Warn("the open-files limit is low: every connection takes one; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=, Kubernetes: the container runtime's default)",
			"soft_limit", lim.Cur, "hard_limit", lim.Max)
	}
	if maxPerIP > 0 && uint64(maxPerIP) > lim.Cur/2 {
		log.Warn("--max-conns-per-ip allows one address half of the open-files limit or more", "max_conns_per_ip", maxPerIP, "soft_limit", lim.Cur)
	}
}

// prefixes turns --trusted-proxies (IPs and CIDRs, validated by ticketLimits) into the
// prefixes whose connections the per-address cap does not count: behind a load
// balancer, its one address stands for every client.
func prefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if !strings.Contains(s, "/") {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			}
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// boundsError checks the bounds' flags.
func (c *serverConfig) boundsError() error {
	switch {
	case c.MaxConnsPerIP < 0:
		return fmt.Errorf("--max-conns-per-ip must be 0 (no cap) or more, not %d", c.MaxConnsPerIP)
	case c.BodyMinRate < 0:
		return fmt.Errorf("--body-min-rate must be 0 or more, not %d", c.BodyMinRate)
	case c.MaxLargeBodies < 0:
		return fmt.Errorf("--max-large-bodies must be 0 or more, not %d", c.MaxLargeBodies)
	}
	return nil
}
