package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// Uploads: release tooling puts a file into the object store through the API
// (PUT /api/v1/uploads/{key}), so that a publisher needs neither the server's disk
// nor its storage credentials, then announces it with POST /api/v1/releases.
//
// The design is one PUT per file, all or nothing, retried whole:
//
//   - The body streams to the store (objstore.Put: a temporary file renamed into
//     place, or a multipart S3 upload minio-go aborts on failure), hashed with
//     SHA-256 on the way; the answer carries the server's digest. Nothing is
//     buffered beyond the store's own part size.
//   - Content-Length is required and bounded (UploadsConfig.MaxSize): a larger body
//     is refused with 413 before a byte of it is read.
//   - A client that states the digest (Content-Digest: sha-256=:<base64>:, RFC 9530)
//     gets 400 and nothing stored when the bytes do not match: the check happens as
//     the last byte arrives, before the store commits the object.
//   - The same PUT again is harmless, and free when the catalog already has that key
//     verified with that digest and the store still holds that version: the answer
//     (200, stored false) comes before the body is read, so a client that sent
//     "Expect: 100-continue" never sends it. A failed attempt leaves nothing behind,
//     so retrying after a broken connection is always safe.
//
// Resuming a half-sent file is not offered: parts would need server-side state
// (S3's multipart upload ids, or partial files) that outlives a request, and the
// whole-file retry is what curl -T, CI upload steps and S3's own PutObject do.

const (
	// DefaultMaxUpload is UploadsConfig.MaxSize when it is zero.
	DefaultMaxUpload = 5 << 30
	uploadRoute      = "/api/v1/uploads/*key"
)

// UploadStore is the part of the object store uploads use.
type UploadStore interface {
	Stat(ctx context.Context, key string) (objstore.Info, error)
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (objstore.Info, error)
}

// UploadsConfig wires PUT /api/v1/uploads/{key}. Without a Store it answers 503.
type UploadsConfig struct {
	Store UploadStore
	// MaxSize bounds one upload in bytes; zero: DefaultMaxUpload.
	MaxSize int64
}

func (s *Server) maxUpload() int64 {
	if s.cfg.Uploads.MaxSize > 0 {
		return s.cfg.Uploads.MaxSize
	}
	return DefaultMaxUpload
}

func (s *Server) routeUploads(api *gin.RouterGroup) {
	api.PUT("/uploads/*key", s.requireScope(apikeys.ScopePublisher), s.putUpload)
}

func (s *Server) putUpload(c *gin.Context) {
	store := s.cfg.Uploads.Store
	if store == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "uploads_disabled",
			Message: "this ingress does not accept uploads", Hint: "put the files into the object store another way, then POST /api/v1/releases"})
		return
	}
	// Every answer before the body is read ends the connection: net/http would
	// otherwise read the body to reuse it (so a client waiting on
	// "Expect: 100-continue" would be told to send it), and the body is what the
	// early answer spares.
	c.Header("Connection", "close")
	key := strings.TrimPrefix(c.Param("key"), "/")
	if err := objstore.ValidateKey(key); err != nil {
		c.Error(err)
		return
	}
	size, limit := c.Request.ContentLength, s.maxUpload()
	if size < 0 {
		c.Error(&apiError{Status: http.StatusLengthRequired, Code: "length_required",
			Message: "an upload needs a Content-Length", Hint: "send the file with its length (curl -T FILE does), not chunked"})
		return
	}
	if size > limit {
		c.Error(&apiError{Status: http.StatusRequestEntityTooLarge, Code: "upload_too_large",
			Message: fmt.Sprintf("the file is %s; this server takes uploads of at most %s (%d bytes)", humanize.IBytes(uint64(size)), humanize.IBytes(uint64(limit)), limit),
			Hint:    "nothing was stored; an operator can raise SLUICE_MAX_UPLOAD_SIZE, or put the file into the object store directly and POST /api/v1/releases"})
		return
	}
	want, err := statedDigest(c.Request.Header)
	if err != nil {
		c.Error(badRequest("invalid_digest", err.Error(), "send Content-Digest: sha-256=:<base64 of the 32-byte digest>: (RFC 9530), or none"))
		return
	}
	ctx := c.Request.Context()
	if want != "" {
		if up, ok := s.alreadyStored(ctx, store, key, want, size); ok {
			c.JSON(http.StatusOK, up)
			return
		}
	}
	body := &digestReader{r: c.Request.Body, h: sha256.New(), left: size, want: want}
	if size == 0 {
		if err := body.check(); err != nil {
			c.Error(err)
			return
		}
	}
	c.Writer.Header().Del("Connection") // the body is read: the connection may be kept
	info, err := store.Put(ctx, key, body, size, c.GetHeader("Content-Type"))
	s.objects.forget(key) // replaced, or maybe replaced if the Put failed midway
	if err != nil {
		c.Error(uploadError(err))
		return
	}
	up := api.Upload{Object: key, Size: info.Size, SHA256: hex.EncodeToString(body.h.Sum(nil)), ETag: info.ETag,
		ContentType: info.ContentType, Stored: true}
	s.log.Info("object uploaded", "object", key, "size", info.Size, "sha256", up.SHA256, "by", principal(c).ID)
	c.JSON(http.StatusCreated, up)
}

// alreadyStored reports whether the store holds exactly the version of key the
// catalog verified with digest sum: then the upload has nothing to add.
func (s *Server) alreadyStored(ctx context.Context, store UploadStore, key, sum string, size int64) (api.Upload, bool) {
	cat := s.cfg.Releases.Catalog
	if cat == nil {
		return api.Upload{}, false
	}
	e, err := cat.Lookup(ctx, key)
	if err != nil || e.State != catalog.StateVerified || e.SHA256 != sum || e.Size != size {
		return api.Upload{}, false // unknown, pending or different: store the body
	}
	info, err := store.Stat(ctx, key)
	if err != nil || info.ETag != e.ETag {
		return api.Upload{}, false
	}
	return api.Upload{Object: key, Size: info.Size, SHA256: sum, ETag: info.ETag, ContentType: info.ContentType}, true
}

// statedDigest reads the SHA-256 of an RFC 9530 Content-Digest header as hex; ""
// when the header names none. Other algorithms in the header are ignored.
func statedDigest(h http.Header) (string, error) {
	for _, v := range h.Values("Content-Digest") {
		for item := range strings.SplitSeq(v, ",") {
			alg, val, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || !strings.EqualFold(alg, "sha-256") {
				continue
			}
			b64, ok := strings.CutPrefix(val, ":")
			if b64, ok = strings.CutSuffix(b64, ":"); !ok {
				return "", errors.New("the sha-256 of Content-Digest is not a :base64: byte sequence")
			}
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(raw) != sha256.Size {
				return "", errors.New("the sha-256 of Content-Digest is not 32 bytes in base64")
			}
			return hex.EncodeToString(raw), nil
		}
	}
	return "", nil
}

// errDigestMismatch: the body is not what its Content-Digest says.
var errDigestMismatch = errors.New("digest mismatch")

// digestReader hashes a body of a known length as the store reads it. When a digest
// was stated, the read that completes the body fails unless the bytes match it, so
// the store never commits them (a store reads exactly the length, and may never ask
// for the EOF after it).
type digestReader struct {
	r    io.Reader
	h    hash.Hash
	left int64
	want string
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.left <= 0 {
		return 0, io.EOF
	}
	n, err := d.r.Read(p[:min(int64(len(p)), d.left)])
	d.h.Write(p[:n])
	d.left -= int64(n)
	if d.left == 0 {
		if cerr := d.check(); cerr != nil {
			return 0, cerr
		}
		if err == nil {
			err = io.EOF
		}
	}
	return n, err
}

func (d *digestReader) check() error {
	if got := hex.EncodeToString(d.h.Sum(nil)); d.want != "" && got != d.want {
		return &apiError{Status: http.StatusBadRequest, Code: "digest_mismatch",
			Message: fmt.Sprintf("the body's sha-256 is %s, Content-Digest says %s", got, d.want),
			Hint:    "nothing was stored; the file changed or was damaged on the way: send it again", cause: errDigestMismatch}
	}
	return nil
}

// uploadError says why a Put failed: the body (the client's side: digest, pace,
// size, a broken connection) or the store.
func uploadError(err error) error {
	if ae, ok := errors.AsType[*apiError](err); ok {
		return ae
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || isBodyTimeout(err) {
		return bodyError(err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("body_incomplete", "the body ended before its Content-Length: "+err.Error(), "nothing was stored; send the file again")
	}
	return err // the store's: toAPIError names it
}
