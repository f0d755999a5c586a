package ingress_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/ingress"
)

// slowPost sends a POST /api/v1/downloads whose body of size bytes goes out in chunks
// of chunk bytes every gap, and returns the answer's status and body, and how long it
// took to come.
func slowPost(t *testing.T, addr string, body string, chunk int, gap time.Duration) (int, string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/v1/downloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			close(answered)
			return
		}
		answered <- resp
	}()
	for rest := body; rest != ""; {
		n := min(chunk, len(rest))
		if _, err := io.WriteString(conn, rest[:n]); err != nil {
			break // the server cut us: its answer is on the way
		}
		rest = rest[n:]
		select {
		case resp := <-answered:
			return readAnswer(t, resp, start)
		case <-time.After(gap):
		}
	}
	select {
	case resp := <-answered:
		return readAnswer(t, resp, start)
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30 s")
		return 0, "", 0
	}
}

func readAnswer(t *testing.T, resp *http.Response, start time.Time) (int, string, time.Duration) {
	t.Helper()
	if resp == nil {
		t.Fatal("the connection closed without an answer")
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), time.Since(start)
}

// A body that trickles in is cut after the body timeout; one that keeps the minimum
// pace is read whole, however long it takes.
func TestSlowBodiesAreCut(t *testing.T) {
	srv := httptest.NewServer(ingress.New(ingress.Config{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		BodyTimeout: time.Second,
		BodyMinRate: 16 << 10,
	}).Handler())
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	// One byte every 300 ms of a 100-byte body: 30 s if nobody cuts it.
	status, body, took := slowPost(t, addr, `{"object":"`+strings.Repeat("a", 80)+`"}`+"        ", 1, 300*time.Millisecond)
	if status != http.StatusRequestTimeout || !strings.Contains(body, "body_timeout") || took > 15*time.Second {
		t.Errorf("trickled body: %d %s after %s, want it cut with a timeout after about 1 s", status, body, took)
	}

	// 60 KiB in 3 s (20 KiB/s, above the 16 KiB/s minimum): read whole, so the
	// handler judges its content (an absolute key), not its pace.
	padded := `{"object":"/absolute"` + strings.Repeat(" ", 60<<10) + `}`
	status, body, took = slowPost(t, addr, padded, 5<<10, 250*time.Millisecond)
	if status != http.StatusBadRequest || strings.Contains(body, "timeout") || !strings.Contains(body, "absolute") {
		t.Errorf("paced body: %d %s after %s, want it read whole and its key refused", status, body, took)
	}
}
