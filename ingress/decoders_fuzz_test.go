package ingress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// FuzzDownloadRequest sends random bodies to POST /api/v1/downloads, through the
// handler. It never panics or answers 5xx; the store is asked only for a valid key, and
// only when the body is valid UTF-8 and JSON whose "object" is that key. The store
// knows no object, so the request ends there (404) and needs no ledger.
func FuzzDownloadRequest(f *testing.F) {
	for _, seed := range []string{
		`{"object":"rel/app.tar.gz"}`, `{"object":"../../etc/passwd"}`, `{"object":"a\u0000b"}`,
		`{"object":"\ud800"}`, "{\"object\":\"\xff\"}", `{"object":1}`, `{"object":"a","extra":[1,2]}`,
		`{"object":"` + strings.Repeat("s", 256) + `"}`, `{"object":"` + strings.Repeat("k/", 600) + `"}`,
		`[]`, `null`, ``, `{"object":"a"} trailing`, `{"object":"a","object":"b"}`,
	} {
		f.Add([]byte(seed))
	}
	store := &statRecorder{}
	h := ingress.New(ingress.Config{Objects: store, Logger: slog.New(slog.DiscardHandler)}).Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		store.reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/downloads", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%q: %d %s", body, rec.Code, rec.Body)
		}
		asked := store.keys()
		if len(asked) == 0 {
			if rec.Code < 400 {
				t.Fatalf("%q: %d without looking the object up", body, rec.Code)
			}
			return
		}
		var parsed struct{ Object string }
		switch {
		case len(asked) > 1:
			t.Fatalf("%q: the store was asked %d times", body, len(asked))
		case !utf8.Valid(body):
			t.Fatalf("%q is not valid UTF-8, yet the store was asked for %q", body, asked[0])
		case json.Unmarshal(body, &parsed) != nil || parsed.Object != asked[0]:
			t.Fatalf("%q: the store was asked for %q, not the body's object", body, asked[0])
		case objstore.ValidateKey(asked[0]) != nil:
			t.Fatalf("%q: the store was asked for the invalid key %q", body, asked[0])
		}
	})
}

// FuzzReleaseBatch sends random bodies, one JSON event or NDJSON, to POST
// /api/v1/releases with a publisher's key, through the handler. It never panics or
// answers 5xx, and every event handed to the release stream is valid: a valid object
// key, a SHA-256 of 64 lowercase hex digits, a size of 0 or more, a bounded event id,
// a valid channel, all valid UTF-8, and no more events than valid UTF-8 lines.
func FuzzReleaseBatch(f *testing.F) {
	sum := strings.Repeat("0f", 32)
	for _, seed := range []struct {
		ndjson bool
		body   string
	}{
		{false, `{"object":"rel/a.tar.gz","sha256":"` + sum + `","size":10,"channel":"stable","event_id":"e-1"}`},
		{true, `{"object":"rel/a","sha256":"` + sum + `","size":1}` + "\n\n" + `{"object":"rel/b","sha256":"` + strings.ToUpper(sum) + `","size":0}`},
		{true, `{"object":"rel/a","sha256":"` + sum + `","size":-1}` + "\n" + `{"object":"a//b","sha256":"` + sum + `","size":1}`},
		{true, "{\"object\":\"\xff\",\"sha256\":\"" + sum + "\",\"size\":1}\n{\"object\":\"ok\",\"sha256\":\"" + sum + "\",\"size\":1}"},
		{true, `{"object":"rel/a","sha256":"` + sum + `","size":1,"event_id":"has space"}`},
		{true, `{"object":"rel/a","sha256":"` + sum + `","size":1,"unknown":true}`},
		{true, `{"object":"rel/a","sha256":"` + sum + `","size":1} {"object":"b"}`},
		{false, `{"object":"rel/a","sha256":"` + sum + `","size":1e30}`},
	} {
		f.Add(seed.ndjson, []byte(seed.body))
	}
	operator := apikeys.Generate()
	q := &recordingQueue{}
	h := ingress.New(ingress.Config{
		Objects:  &statRecorder{},
		Keys:     apikeys.New(nil, operator), // the bootstrap key needs no bucket
		Logger:   slog.New(slog.DiscardHandler),
		Releases: ingress.ReleasesConfig{Queue: q, Catalog: emptyCatalog{}},
	}).Handler()
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	eventID := regexp.MustCompile(`^[\x21-\x7e]{1,256}$`)
	f.Fuzz(func(t *testing.T, ndjson bool, body []byte) {
		q.reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/releases", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if ndjson {
			req.Header.Set("Content-Type", "application/x-ndjson")
		}
		req.Header.Set("Authorization", "Bearer "+operator)
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%q: %d %s", body, rec.Code, rec.Body)
		}
		events := q.all()
		validLines := 0
		for line := range bytes.SplitSeq(body, []byte("\n")) {
			if utf8.Valid(line) && len(bytes.TrimSpace(line)) > 0 {
				validLines++
			}
		}
		if len(events) > validLines {
			t.Fatalf("%q: %d events from %d valid UTF-8 lines", body, len(events), validLines)
		}
		for _, ev := range events {
			for _, v := range []string{ev.Object, ev.SHA256, ev.EventID, ev.Channel, ev.Identity} {
				if !utf8.ValidString(v) {
					t.Fatalf("%q: an event with the invalid UTF-8 %q", body, v)
				}
			}
			switch {
			case objstore.ValidateKey(ev.Object) != nil:
				t.Fatalf("%q: an event for the invalid key %q", body, ev.Object)
			case !hex64.MatchString(ev.SHA256):
				t.Fatalf("%q: an event with the SHA-256 %q", body, ev.SHA256)
			case ev.Size < 0:
				t.Fatalf("%q: an event of %d bytes", body, ev.Size)
			case ev.EventID != "" && !eventID.MatchString(ev.EventID):
				t.Fatalf("%q: an event with the id %q", body, ev.EventID)
			case ev.Channel != "" && catalog.ValidateChannel(ev.Channel) != nil:
				t.Fatalf("%q: an event in the channel %q", body, ev.Channel)
			case ev.Identity == "":
				t.Fatalf("%q: an event without identity", body)
			}
		}
	})
}

// statRecorder is a store that holds nothing and remembers which keys it was asked for.
type statRecorder struct {
	mu    sync.Mutex
	asked []string
}

func (s *statRecorder) Stat(_ context.Context, key string) (objstore.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, key)
	return objstore.Info{}, objstore.ErrNotFound
}

func (s *statRecorder) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

func (s *statRecorder) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = nil
}
