package main

import (
	"flag"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/shared/queue"
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

// Atomic batches only where the server syncs every message: serve's embedded server,
// or a server the operator says does (on).
func TestPublishBatches(t *testing.T) {
	for _, tc := range []struct {
		setting  string
		embedded bool
		want     queue.PublishMode
		wantErr  string
	}{
		{"auto", true, queue.AtomicBatches, ""},
		{"auto", false, queue.Pipelined, ""},
		{"on", false, queue.AtomicBatches, ""},
		{"off", true, queue.Pipelined, ""},
		{"yes", false, 0, `"yes" is not one of auto, on, off`},
	} {
		c := serverConfig{PublishBatches: tc.setting}
		got, err := c.publishMode(tc.embedded)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want one saying %q", tc.setting, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("--publish-batches=%s, embedded %v: %v, %v; want %v", tc.setting, tc.embedded, got, err, tc.want)
		}
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

// Exporting is on with the flag or either OTLP endpoint variable; the protocol is the
// traces variable's, then the general one's, then http/protobuf.
func TestTracingConfigFromOTELVariables(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flag     string
		env      map[string]string
		export   bool
		protocol string
		wantErr  string
	}{
		{"nothing set", "", nil, false, "http/protobuf", ""},
		{"flag", "collector:4318", nil, true, "http/protobuf", ""},
		{"endpoint variable", "", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, "http/protobuf", ""},
		{"traces endpoint variable, grpc", "", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, "grpc", ""},
		{"traces protocol wins", "c:4317", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, true, "grpc", ""},
		{"exporter none", "c:4318", map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false, "http/protobuf", ""},
		{"sdk disabled", "c:4318", map[string]string{"OTEL_SDK_DISABLED": "true"}, false, "http/protobuf", ""},
		{"json", "c:4318", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, false, "", "http/json"},
		{"zipkin", "c:4318", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "", "zipkin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracingConfig(&serverConfig{OTLPEndpoint: tc.flag}, roleWorker, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Export != tc.export || got.Protocol != tc.protocol || got.Endpoint != tc.flag || got.Role != "worker" {
				t.Fatalf("tracingConfig = %+v, %v; want export %v over %s", got, err, tc.export, tc.protocol)
			}
		})
	}
}

func TestS3Location(t *testing.T) {
	for _, tc := range []struct {
		bucket, prefix         string
		wantBucket, wantPrefix string
		wantErr                bool
	}{
		{"downloads", "", "downloads", "", false},
		{"downloads", "eu", "downloads", "eu", false},
		{"s3://downloads", "", "downloads", "", false},
		{"s3://downloads/sluice/eu/", "", "downloads", "sluice/eu", false},
		{"s3://downloads/eu", "eu/", "downloads", "eu", false},
		{"s3://downloads/eu", "us", "", "", true},
		{"s3:///eu", "", "", "", true},
	} {
		b, p, err := (&serverConfig{S3Bucket: tc.bucket, S3Prefix: tc.prefix}).s3Location()
		if (err != nil) != tc.wantErr || b != tc.wantBucket || p != tc.wantPrefix {
			t.Errorf("--s3-bucket %q --s3-prefix %q: bucket %q prefix %q err %v; want %q %q (error: %v)",
				tc.bucket, tc.prefix, b, p, err, tc.wantBucket, tc.wantPrefix, tc.wantErr)
		}
	}
}
