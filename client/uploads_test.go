package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// An upload is one PUT of the whole file with its length, its digest and the key
// escaped segment by segment; it is not cut short by the client's Timeout, and
// retried through a RetryPolicy it sends the whole file again from its first byte.
func TestUploadSendsTheWholeFileEachAttempt(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 50_000)
	sum := sha256.Sum256(body)
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPut || r.URL.EscapedPath() != "/api/v1/uploads/rel/a%20b/app.bin":
			t.Errorf("%s %s", r.Method, r.URL.EscapedPath())
		case r.ContentLength != int64(len(body)) || !bytes.Equal(got, body):
			t.Errorf("attempt %d: %d bytes (Content-Length %d), want the whole file", attempts.Load()+1, len(got), r.ContentLength)
		case r.Header.Get("Content-Digest") != "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":":
			t.Errorf("Content-Digest %q", r.Header.Get("Content-Digest"))
		case r.Header.Get("Authorization") != "Bearer slk_pub":
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		if attempts.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(300 * time.Millisecond) // longer than the client's Timeout
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(Upload{Object: "rel/a b/app.bin", Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), Stored: true})
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, Options{APIKey: "slk_pub", Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	var up Upload
	err = RetryPolicy{Budget: 10 * time.Second, FirstWait: 10 * time.Millisecond}.Do(t.Context(), func() (err error) {
		up, err = c.Upload(t.Context(), UploadFile{Key: "rel/a b/app.bin", Body: bytes.NewReader(body), Size: int64(len(body)),
			SHA256: hex.EncodeToString(sum[:]), Sent: func(n int64) { sent.Store(n) }})
		return err
	})
	if err != nil || !up.Stored || up.SHA256 != hex.EncodeToString(sum[:]) || attempts.Load() != 2 {
		t.Fatalf("upload: %+v, %v after %d attempts", up, err, attempts.Load())
	}
	if sent.Load() != int64(len(body)) {
		t.Fatalf("progress said %d bytes sent, want %d", sent.Load(), len(body))
	}
}
