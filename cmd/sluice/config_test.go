package main

import (
	"flag"
	"strings"
	"testing"
)

func TestTicketLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     serverConfig
		rate    int
		proxies int
		wantErr string
	}{
		{"defaults", serverConfig{TicketRate: 60, TicketBurst: 20}, 60, 0, ""},
		{"off", serverConfig{TicketRate: 0, TicketBurst: 20}, 0, 0, ""},
		{"proxies", serverConfig{TicketRate: 60, TrustedProxies: "10.0.0.0/8, 192.168.1.7,fd00::/8"}, 60, 3, ""},
		{"negative", serverConfig{TicketRate: -1}, 0, 0, "must be 0 or more"},
		{"bad proxy", serverConfig{TrustedProxies: "10.0.0.0/8,lb.internal"}, 0, 0, `"lb.internal" is neither an IP address nor a CIDR`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, proxies, err := tc.cfg.ticketLimits()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || limit.Rate != tc.rate || len(proxies) != tc.proxies {
				t.Fatalf("limit %+v, proxies %q, err %v", limit, proxies, err)
			}
			if tc.rate == 0 && !limit.IsZero() {
				t.Fatalf("a rate of 0 gave a limit %+v, want none", limit)
			}
		})
	}
}

// serve is for one machine and listens on loopback unless told otherwise; the roles
// run in containers and listen on every interface.
func TestServeListensOnLoopbackByDefault(t *testing.T) {
	for _, tc := range []struct {
		r          role
		flag, want string
	}{
		{roleServe, "ingress-addr", "127.0.0.1:8080"},
		{roleServe, "edge-addr", "127.0.0.1:8081"},
		{roleIngress, "ingress-addr", ":8080"},
		{roleEdge, "edge-addr", ":8081"},
	} {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		registerServerFlags(fs, tc.r)
		if got := fs.Lookup(tc.flag).DefValue; got != tc.want {
			t.Errorf("%s --%s defaults to %q, want %q", tc.r, tc.flag, got, tc.want)
		}
	}
}
