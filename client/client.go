// Package client is a typed client of sluice's HTTP API: tickets (create, poll,
// cancel), the release catalog, and the operators' admin API. Every refusal comes back
// as an *Error carrying the HTTP status and the server's problem details (RFC 9457:
// detail, and the code and hint extension members).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// Error is an answer the server gave instead of what was asked.
type Error struct {
	Status     int
	Code       string        // stable machine-readable code, e.g. "object_not_found"
	Message    string        // what happened, for a person
	Hint       string        // what to do about it
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
	Method     string
	Path       string
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, msg)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Temporary reports whether the same request may succeed later: the server is
// overloaded, failed, or one of its dependencies is down (see RetryableStatus).
func (e *Error) Temporary() bool { return RetryableStatus(e.Status) }

// HTTPStatus is the answer's status.
func (e *Error) HTTPStatus() int { return e.Status }

// RetryAfterHint is the answer's Retry-After; 0 when absent.
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Status
	}
	return 0
}

// CodeOf returns the server's error code of an *Error in err's chain, or "".
func CodeOf(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return ""
}

// Client calls one sluice ingress.
type Client struct {
	base      *url.URL
	key       string
	http      *http.Client
	userAgent string
}

// Options configure a Client.
type Options struct {
	// APIKey is sent as "Authorization: Bearer <key>"; empty sends none.
	APIKey string
	// HTTP is the client used; nil uses one with Timeout (default 30s) that does not
	// follow redirects (the API's 303s are read, not followed).
	HTTP      *http.Client
	Timeout   time.Duration
	UserAgent string
}

// New returns a client of the ingress at server (http://host:port).
func New(server string, o Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an http:// or https:// URL", server)
	}
	hc := o.HTTP
	if hc == nil {
		t := o.Timeout
		if t <= 0 {
			t = 30 * time.Second
		}
		hc = &http.Client{Timeout: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	ua := o.UserAgent
	if ua == "" {
		ua = "sluice-client"
	}
	return &Client{base: u, key: o.APIKey, http: hc, userAgent: ua}, nil
}

// Server returns the base URL the client calls.
func (c *Client) Server() string { return c.base.String() }

// do sends a request with in as its JSON body (when non-nil) and decodes a 2xx JSON
// answer into out (when non-nil). Other statuses become an *Error. The answer's
// headers are returned either way.
func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, in, out any) (http.Header, error) {
	var body []byte
	contentType := ""
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body, contentType = raw, "application/json"
	}
	return c.send(ctx, method, path, hdr, contentType, body, out)
}

// send is do with a body already encoded as contentType (none when empty).
func (c *Client) send(ctx context.Context, method, path string, hdr http.Header, contentType string, in []byte, out any) (http.Header, error) {
	var body io.Reader
	if contentType != "" {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.roundTrip(c.http, req, path, out)
}

// roundTrip sends req through hc with the client's headers and decodes the answer
// as send does.
func (c *Client) roundTrip(hc *http.Client, req *http.Request, path string, out any) (http.Header, error) {
	method := req.Method
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.Header, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, apiError(method, path, resp, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

func apiError(method, path string, resp *http.Response, raw []byte) *Error {
	e := &Error{Status: resp.StatusCode, Method: method, Path: path, RetryAfter: RetryAfter(resp.Header)}
	// sluice answers RFC 9457 problem details that also carry error; a server (or a
	// proxy) that sends problem details alone has detail and title, and a type URI
	// whose last segment is sluice's code. A member of another type (a proxy's
	// "status": "error") leaves the others readable.
	var p api.Problem
	if err := json.Unmarshal(raw, &p); err == nil || errors.As(err, new(*json.UnmarshalTypeError)) {
		e.Message, e.Code, e.Hint = p.Message(), p.ErrorCode(), p.Hint
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(raw))
		if len(e.Message) > 200 || e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// RetryAfter reads a Retry-After header in seconds (the form sluice sends) or as an
// HTTP date; 0 when absent or unreadable.
func RetryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
