package telemetry_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/telemetry"
)

// A JSON log line says how long something took in units a reader sees.
func TestJSONLogsCarryReadableDurations(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: telemetry.ReplaceDurations}))
	log.Info("request", "duration", 1500*time.Microsecond, "status", 200)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["duration"] != "1.5ms" || line["status"] != float64(200) {
		t.Errorf("logged %s, want duration \"1.5ms\" and status 200", buf.Bytes())
	}
}
