package e2e

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// TestOTELVariablesAloneExport: with no --otlp-endpoint, OpenTelemetry's own
// variables are enough: a real ingress process exports over either protocol as
// sluice-ingress, with the resource attributes and headers given.
func TestOTELVariablesAloneExport(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			rc := testenv.StartOTLPReceiver(t, protocol)
			s := newStack(t, stackOptions{Env: []string{
				"SLUICE_OTLP_ENDPOINT=",
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + rc.URL,
				"OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol,
				"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer e2e",
				"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=e2e",
				"OTEL_BSP_SCHEDULE_DELAY=100",
				"OTEL_SERVICE_NAME=", "OTEL_TRACES_SAMPLER=", "OTEL_TRACES_EXPORTER=", "OTEL_SDK_DISABLED=",
			}})
			s.dumpLogsOnFailure()
			s.start("ingress")
			resp, err := http.Post(s.ingressURL+"/api/v1/downloads", "application/json", bytes.NewReader([]byte(`{"object":"missing.bin"}`)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()

			deadline := time.Now().Add(20 * time.Second)
			ingress := false
			for !ingress && time.Now().Before(deadline) {
				for _, sp := range rc.Spans() {
					ingress = ingress || sp.Resource["sluice.role"] == "ingress" &&
						sp.Resource["service.name"] == "sluice-ingress" && sp.Resource["deployment.environment"] == "e2e"
				}
				time.Sleep(50 * time.Millisecond)
			}
			if !ingress {
				t.Fatalf("no span from the ingress as sluice-ingress with deployment.environment=e2e; received %v", rc.Spans())
			}
			if got := rc.Header("authorization"); got != "Bearer e2e" {
				t.Errorf("authorization header %q, want OTEL_EXPORTER_OTLP_HEADERS'", got)
			}
		})
	}
}
