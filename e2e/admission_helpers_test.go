package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// Helpers for the admission tests (admission_*_test.go): API keys, the admin API,
// and reading the ledger as an operator would.

const admOperatorKey = "slk_e2e_admission_operator_key"

// newAdmissionStack is a stack whose ingress accepts admOperatorKey as the bootstrap
// operator key (SLUICE_ADMIN_KEY).
func newAdmissionStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	o.Env = append([]string{"SLUICE_ADMIN_KEY=" + admOperatorKey}, o.Env...)
	s := newStack(t, o)
	s.dumpLogsOnFailure()
	return s
}

var apiClient = &http.Client{Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// call sends one request with an API key (empty: none) and a JSON body (nil: none)
// and returns the status, the headers and the body.
func call(t testing.TB, method, url, key string, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Accept", "application/json") // an API client: a queued ticket's /download answers 202 at once
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// operator calls the admin API of the stack's (last started) ingress with the
// bootstrap key, expects a 2xx answer and decodes it into out (if not nil).
func (s *stack) operator(method, path string, body, out any) {
	s.t.Helper()
	code, _, raw := call(s.t, method, s.ingressURL+path, admOperatorKey, body)
	if code/100 != 2 {
		s.t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

// createKey creates an API key and returns its id and secret.
func (s *stack) createKey(scope, tenant string) (id, key string) {
	s.t.Helper()
	var out struct{ ID, Key string }
	s.operator(http.MethodPost, "/api/v1/admin/keys", map[string]string{"scope": scope, "tenant": tenant}, &out)
	if out.ID == "" || out.Key == "" {
		s.t.Fatalf("created key without id or secret: %+v", out)
	}
	return out.ID, out.Key
}

// requestAs creates a ticket with a client key.
func (s *stack) requestAs(key, object string) api.Ticket {
	s.t.Helper()
	tk := s.request(object, "Authorization", "Bearer "+key)
	s.owners.Store(tk.ID, key)
	return tk
}

func (s *stack) admissionStats() api.Stats {
	s.t.Helper()
	var st api.Stats
	s.operator(http.MethodGet, "/api/v1/admin/stats", nil, &st)
	return st
}

// ledgerTicket reads fields of a ticket straight from the ledger (an operator's view).
func ledgerTicket(t testing.TB, rdb *redis.Client, id string) map[string]string {
	t.Helper()
	h, err := rdb.HGetAll(t.Context(), "sluice:{adm}:t:"+id).Result()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// slotsHeld counts live slots (lease not lapsed) and every slot entry.
func slotsHeld(t testing.TB, rdb *redis.Client) (live, all int64) {
	t.Helper()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	live, err := rdb.ZCount(t.Context(), "sluice:{adm}:slots", now, "+inf").Result()
	if err != nil {
		t.Fatal(err)
	}
	all, _ = rdb.ZCard(t.Context(), "sluice:{adm}:slots").Result()
	return live, all
}

// waitSettled waits, up to within for each, until the ledger holds no slot and
// JetStream no ticket message: what every ended ticket leaves behind.
func waitSettled(t *testing.T, rdb *redis.Client, natsURL string, within time.Duration) {
	t.Helper()
	eventually(t, within, "no slot held", func() bool {
		live, all := slotsHeld(t, rdb)
		return live == 0 && all == 0
	})
	eventually(t, within, "JetStream holds no ticket message", func() bool {
		info := consumerInfo(t.Context(), t, natsURL)
		return info.NumAckPending == 0 && info.NumPending == 0
	})
}

// statuses reads many tickets' status from the ledger.
func statuses(t testing.TB, rdb *redis.Client, ids []string) map[string]string {
	t.Helper()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(t.Context(), "sluice:{adm}:t:"+id, "status")
	}
	_, _ = pipe.Exec(t.Context())
	out := make(map[string]string, len(ids))
	for i, c := range cmds {
		out[ids[i]] = c.Val()
	}
	return out
}

func epochOf(t testing.TB, rdb *redis.Client, id string) int64 {
	t.Helper()
	n, _ := strconv.ParseInt(ledgerTicket(t, rdb, id)["epoch"], 10, 64)
	return n
}

// decodeJSON decodes a 200 answer's JSON body.
func decodeJSON(resp *http.Response, v any) error {
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", resp.Request.URL.Path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, v)
}

// flights are the edges' own records of the downloads they had in flight: from
// "stream started" (logged once the slot was taken) to the moment the stream stopped
// sending ("stopped" on its end line, before the slot is released), merged by time.
// Every byte of a stream is sent between the two, so the count can only be lower than
// the slots held, never higher: more than the limit would be a real breach.
type flights struct {
	events       []flightEvent
	starts, ends int
}

type flightEvent struct {
	at    time.Time
	delta int
}

func edgeFlights(t *testing.T, edges []*testenv.Process) flights {
	t.Helper()
	var f flights
	for _, e := range edges {
		for _, l := range logLines(t, e.Log) {
			switch l["msg"] {
			case "stream started":
				at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
				f.events = append(f.events, flightEvent{at, +1})
				f.starts++
			case "stream completed", "stream ended early":
				at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["stopped"]))
				f.events = append(f.events, flightEvent{at, -1})
				f.ends++
			}
		}
	}
	slices.SortFunc(f.events, func(a, b flightEvent) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end and a start at the same instant: the end first
	})
	return f
}

// most is the largest number of downloads in flight at once.
func (f flights) most() int {
	n, most := 0, 0
	for _, e := range f.events {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// at is the number of downloads in flight at an instant.
func (f flights) at(instant time.Time) int {
	n := 0
	for _, e := range f.events {
		if e.at.After(instant) {
			break
		}
		n += e.delta
	}
	return n
}
