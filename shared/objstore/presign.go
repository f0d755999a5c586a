package objstore

import (
	"context"
	"mime"
	"net/url"
	"time"
)

// Presign returns a URL that GETs key straight from the bucket, without credentials,
// for ttl (at most 7 days, S3's limit), telling the client to save it as filename.
// It is signed for GET only: HEAD is refused (403), so clients that learn the size
// first probe with a one-byte range instead (client/fetch does).
//
// The URL is bound to the key, not to a version: if the object is replaced while the
// URL is valid, it serves the new content (see the direct mode in ARCHITECTURE.md).
func (s *S3) Presign(ctx context.Context, key string, ttl time.Duration, filename string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	// Like the edge's answers: the URL is one ticket's, never to be cached or reused.
	params := url.Values{"response-cache-control": {"private, no-store"}}
	if filename != "" {
		params.Set("response-content-disposition", mime.FormatMediaType("attachment", map[string]string{"filename": filename}))
	}
	u, err := s.core.Client.PresignedGetObject(ctx, s.bucket, s.object(key), ttl, params)
	if err != nil {
		return "", s3Error("presign", key, err)
	}
	return u.String(), nil
}
