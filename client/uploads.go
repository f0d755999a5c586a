package client

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"

	"github.com/sluice-dl/sluice/api"
)

// Upload is what the server stored for an upload (PUT /api/v1/uploads/{key}).
type Upload = api.Upload

// UploadFile is one file to upload: Size bytes read from Body (at offset 0 on every
// attempt, so that a failed upload can be sent again whole).
type UploadFile struct {
	Key         string
	Body        io.ReaderAt
	Size        int64
	SHA256      string // hex; sent as Content-Digest, which the server checks before it stores
	ContentType string // empty: the server guesses from the key's extension
	// Sent, when set, is told how many bytes of this attempt have gone out.
	Sent func(n int64)
}

// Upload puts one file into the object store through the API. Each attempt is
// all or nothing on the server; retried with a RetryPolicy it resends the whole
// file. The request is bounded by ctx only, not by the client's Timeout: a large
// file takes as long as the network needs.
//
// It sends "Expect: 100-continue", so a refusal (413, 403) or the server already
// holding this version arrives before the body is sent.
func (c *Client) Upload(ctx context.Context, f UploadFile) (Upload, error) {
	const method = http.MethodPut
	path := "/api/v1/uploads/" + escapeKey(f.Key)
	body := &countingReader{r: io.NewSectionReader(f.Body, 0, f.Size), sent: f.Sent}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return Upload{}, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.ContentLength = f.Size
	if f.Size == 0 {
		req.Body = http.NoBody
	}
	if f.SHA256 != "" {
		raw, err := hex.DecodeString(f.SHA256)
		if err != nil {
			return Upload{}, fmt.Errorf("sha256 of %s: %w", f.Key, err)
		}
		req.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(raw)+":")
	}
	if f.ContentType != "" {
		req.Header.Set("Content-Type", f.ContentType)
	}
	req.Header.Set("Expect", "100-continue")
	var up Upload
	// Without the client's total timeout; the rest of its transport is the same.
	hc := &http.Client{Transport: c.http.Transport, CheckRedirect: c.http.CheckRedirect, Jar: c.http.Jar}
	if _, err := c.roundTrip(hc, req, path, &up); err != nil {
		return Upload{}, err
	}
	return up, nil
}

type countingReader struct {
	r    io.Reader
	n    int64
	sent func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.sent != nil && n > 0 {
		c.sent(c.n)
	}
	return n, err
}
