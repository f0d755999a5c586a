package signer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// serveDownload answers GET and HEAD /d/{token}: verify the token, check the object is
// still the version it names, evaluate the request's preconditions and Range, and, for
// GET, stream the bytes while holding the ticket's slot.
func (e *Edge) serveDownload(w http.ResponseWriter, r *http.Request) error {
	claims, err := e.verify(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	info, err := e.stat(r.Context(), claims)
	if err != nil {
		return fmt.Errorf("stat %s: %w", claims.Object, err)
	}
	if info.ETag != claims.ETag {
		return fmt.Errorf("ticket %s has version %s, store has %s: %w", claims.Ticket, claims.ETag, info.ETag, errObjectChanged)
	}

	v := validators{etag: `"` + info.ETag + `"`, modTime: info.ModTime}
	h := w.Header()
	h.Set("Cache-Control", "private, no-store") // the URL is one ticket's, never to be reused
	h.Set("ETag", v.etag)
	if !info.ModTime.IsZero() {
		h.Set("Last-Modified", info.ModTime.UTC().Format(http.TimeFormat))
	}
	switch v.evaluate(r.Header) {
	case preconditionFailed:
		return errPreconditionFailed
	case notModified:
		w.WriteHeader(http.StatusNotModified)
		return nil
	}

	var ranges []byteRange
	if rh := r.Header.Values("Range"); len(rh) == 1 && v.rangeApplies(r.Header) {
		if ranges, err = parseRange(rh[0], info.Size); err != nil {
			return &unsatisfiableError{size: info.Size}
		}
	}
	contentType := info.ContentType
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	var boundary string
	if len(ranges) > 1 {
		boundary = rand.Text()
	}
	b := planBody(info.Size, contentType, ranges, boundary)
	if r.Method == http.MethodHead {
		// HEAD takes no slot: it costs the origin nothing. It asks the ledger whether
		// the slot is still held, so that an ended ticket's link answers 410 as GET does.
		ref := admission.Stream{Ticket: claims.Ticket, Epoch: claims.Epoch, Tenant: claims.Tenant,
			Object: claims.Object, ETag: claims.ETag, Size: info.Size}
		if err := e.slots.CheckStream(r.Context(), ref); err != nil {
			if refused(err) {
				return fmt.Errorf("check stream: %w", err)
			}
			return fmt.Errorf("check stream: %w: %w", errLedgerUnavailable, err)
		}
		setBodyHeaders(h, b, claims.Object)
		w.WriteHeader(b.status)
		return nil
	}
	return e.stream(w, r, claims, b, info.Size)
}

// verify is Keyring.Verify, remembered for the last token of the request's
// connection: a download manager's keep-alive ranges carry one token, and the keyring
// never changes while the edge runs, so a token seen on the connection needs only its
// expiry checked again.
func (e *Edge) verify(ctx context.Context, tok string) (token.Claims, error) {
	now := e.now()
	conn, _ := ctx.Value(connKey{}).(*connHolds)
	if conn != nil {
		if v := conn.verified.Load(); v != nil && v.token == tok {
			if now.After(v.claims.Expires) {
				return token.Claims{}, token.ErrExpired
			}
			return v.claims, nil
		}
	}
	claims, err := e.keys.Verify(tok, now)
	if err == nil && conn != nil {
		conn.verified.Store(&verifiedToken{token: tok, claims: claims})
	}
	return claims, err
}

// versionStater is a store that can vouch for one version while the storage behind
// it cannot answer (edgecache.Cache serves its verified copies stale on error).
type versionStater interface {
	StatVersion(ctx context.Context, key, etag string) (objstore.Info, error)
}

// stat returns the current version of the token's object: from a store that vouches
// for versions itself (the edge cache, with its own revalidation window), else as the
// store answered it within Revalidate when that was the token's version (versions.go),
// else from the store.
func (e *Edge) stat(ctx context.Context, claims token.Claims) (objstore.Info, error) {
	if vs, ok := e.store.(versionStater); ok {
		return vs.StatVersion(ctx, claims.Object, claims.ETag)
	}
	now := time.Now()
	if info, ok := e.versions.get(claims.Object, claims.ETag, now); ok {
		return info, nil
	}
	info, err := e.store.Stat(ctx, claims.Object)
	if err == nil {
		e.versions.put(claims.Object, claims.ETag, info, now)
	}
	return info, err
}

// stream sends b for claims' object while the ticket's slot is held.
func (e *Edge) stream(w http.ResponseWriter, r *http.Request, claims token.Claims, b body, size int64) (err error) {
	observed, end := e.observer.Streaming(r.Context(), claims)
	defer func() { end(err) }()
	r = r.WithContext(observed)
	// This response in the ledger; what the token says of the ticket lets the stream
	// re-register if the ledger was lost while it ran.
	ref := admission.Stream{Ticket: claims.Ticket, Epoch: claims.Epoch,
		Tenant: claims.Tenant, Object: claims.Object, ETag: claims.ETag, Size: size}
	// Bytes before the first range are the client's already (a resume): a stream that
	// re-registers counts them as sent, since the ledger that counted them was lost.
	ref.Offset = b.parts[0].span.start
	// What it sends of these is covered: the ticket is done once all of the object is.
	for _, p := range b.parts {
		ref.Parts = append(ref.Parts, admission.Span{Start: p.span.start, Length: p.span.length})
	}
	hold, err := e.acquire(r.Context(), ref)
	if err != nil {
		if refused(err) {
			return fmt.Errorf("begin stream: %w", err)
		}
		return fmt.Errorf("begin stream: %w: %w", errLedgerUnavailable, err)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	flow := e.throttle.open(claims)
	defer flow.close()
	e.stats.streams.Add(1)
	defer e.stats.streams.Add(-1)
	rc := http.NewResponseController(w)
	l := hold.start(ref.Parts, func(cause error) {
		cancel(cause)
		// Unblock a write in progress; the copy loop sees ctx canceled before the next.
		_ = rc.SetWriteDeadline(time.Now())
	})
	// "stream started" and the end line's "stopped" bound the span in which this
	// stream's bytes were sent and its slot surely held: an audit trail of how many
	// downloads were in flight at once (e2e/admission_load_test.go merges the edges').
	// Their attributes are built only when the line is written: this runs per request.
	debug := e.log.Enabled(ctx, slog.LevelDebug)
	if debug {
		e.log.Debug("stream started", "ticket", claims.Ticket, "object", claims.Object, "epoch", claims.Epoch)
	}
	defer func() {
		stopped := e.now()
		sent := hold.finish(l)
		if err != nil {
			e.log.Info("stream ended early", "ticket", claims.Ticket, "object", claims.Object,
				"status", b.status, "sent", sent, "stopped", stopped, "err", err)
		} else if debug {
			e.log.Debug("stream completed", "ticket", claims.Ticket, "object", claims.Object,
				"status", b.status, "sent", sent, "stopped", stopped)
		}
	}()

	// The first part is opened before the status goes out, so that a version change or
	// an outage is still answered with an error status rather than a cut body.
	first, err := e.open(ctx, hold, claims, b.parts[0].span)
	if err != nil {
		if errors.Is(err, objstore.ErrChanged) || errors.Is(err, objstore.ErrNotFound) {
			e.versions.forget(claims.Object, claims.ETag) // the next request asks the store
		}
		return withCause(ctx, err)
	}
	setBodyHeaders(w.Header(), b, claims.Object)
	w.WriteHeader(b.status)
	err = e.writeBody(ctx, w, rc, first, b, hold, claims, &l.progress, flow)
	if err == nil {
		// Out of net/http's buffers while the idle deadline still holds, before the
		// slot is released.
		err = rc.Flush()
	}
	if err != nil {
		return &abortedError{withCause(ctx, err)}
	}
	return nil
}

// withCause adds to err why ctx was canceled, if it was: "context canceled" alone
// would hide that the slot was lost.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

// writeBody sends every part of b, first being the open reader of the first part.
func (e *Edge) writeBody(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, first io.ReadCloser, b body, h *slotHold, claims token.Claims, p *progress, f *flow) error {
	for i, part := range b.parts {
		src := first
		if i > 0 {
			var err error
			if src, err = e.open(ctx, h, claims, part.span); err != nil {
				return err
			}
		}
		if part.header != "" {
			if _, err := e.write(ctx, w, rc, []byte(part.header)); err != nil {
				src.Close()
				return err
			}
		}
		err := e.copyBody(ctx, w, rc, src, part.span.length, p, f)
		src.Close()
		if err != nil {
			return err
		}
	}
	if b.closing != "" {
		if _, err := e.write(ctx, w, rc, []byte(b.closing)); err != nil {
			return err
		}
	}
	return nil
}

// open opens exactly span of the object, at the version the token names, in the file
// h keeps open when it keeps one (files.go).
func (e *Edge) open(ctx context.Context, h *slotHold, claims token.Claims, span byteRange) (io.ReadCloser, error) {
	if span.length == 0 {
		return io.NopCloser(strings.NewReader("")), nil // an empty object: nothing to fetch
	}
	if rd := h.takeFile(span.start, span.length); rd != nil {
		return rd, nil
	}
	rd, err := e.store.Open(ctx, claims.Object, span.start, span.length, claims.ETag)
	if err != nil {
		return nil, fmt.Errorf("open %s at %d+%d: %w", claims.Object, span.start, span.length, err)
	}
	return h.keep(rd), nil
}

// copyBody copies exactly n bytes of src to w, recording each byte the client
// accepted in p. It is the one loop object bytes leave the edge through, in chunks
// sized by a pacer (see pace.go): each chunk first waits on the bandwidth limits of f,
// then is written under a fresh idle deadline.
//
// A section of a local file (objstore.LocalReader) goes out with sendfile(2): each
// chunk is an *io.LimitedReader over the *os.File handed to the response's ReadFrom,
// which net/http passes to the TCP connection's zero-copy path. Anything else is
// copied through one pooled buffer, so a stream holds one buffer whatever the
// object's size.
func (e *Edge) copyBody(ctx context.Context, w io.Writer, rc *http.ResponseController, src io.Reader, n int64, p *progress, f *flow) error {
	pace := newPacer(f)
	if conn, _ := ctx.Value(connKey{}).(*connHolds); conn != nil {
		pace.resume(int(conn.chunk.Load()))
		defer func() { conn.chunk.Store(int64(pace.chunk)) }()
	}
	if sec, ok := src.(fileSection); ok {
		if rf, ok := w.(io.ReaderFrom); ok {
			file := sec.Section()
			return pace.run(ctx, n, func(size int) (int64, error) {
				chunk := &io.LimitedReader{R: file.R, N: int64(size)}
				written, err := e.timedWrite(ctx, rc, p, func() (int64, error) { return rf.ReadFrom(chunk) })
				file.N -= written
				e.stats.zeroCopyBytes.Add(written)
				if err == nil && written < int64(size) {
					err = fmt.Errorf("read object: %w", io.ErrUnexpectedEOF) // the file shrank
				}
				return written, err
			})
		}
	}
	bufp := e.buffers.Get().(*[]byte)
	defer e.buffers.Put(bufp)
	buf := *bufp
	pace.limit(len(buf))
	return pace.run(ctx, n, func(size int) (int64, error) {
		chunk := buf[:size]
		if _, err := io.ReadFull(src, chunk); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the store sent less than it was asked for
			}
			return 0, fmt.Errorf("read object: %w", err)
		}
		return e.timedWrite(ctx, rc, p, func() (int64, error) {
			n, err := w.Write(chunk)
			return int64(n), err
		})
	})
}

// fileSection is what objstore.LocalReader offers for zero-copy sending.
type fileSection interface {
	Section() *io.LimitedReader
}

// timedWrite runs one write to the client under the idle deadline, recording in p how
// long the edge waited on the client and what it accepted.
func (e *Edge) timedWrite(ctx context.Context, rc *http.ResponseController, p *progress, write func() (int64, error)) (int64, error) {
	// A writer without deadlines (a test recorder, a wrapping middleware) just goes
	// without the idle bound.
	_ = rc.SetWriteDeadline(time.Now().Add(e.idleTimeout))
	// Checked after setting the deadline: an abort sets its own deadline after
	// canceling ctx, so either this check sees it or the write fails at once.
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	start := e.now()
	p.writing.Store(start.UnixNano())
	n, err := write()
	p.writing.Store(0)
	p.blocked.Add(int64(e.now().Sub(start)))
	p.sent.Add(n)
	e.stats.bytesSent.Add(n)
	if err != nil {
		return n, fmt.Errorf("write to client: %w", err)
	}
	return n, nil
}

// write writes p to the client unless the stream has been stopped, giving up when the
// client accepts nothing for IdleTimeout. It is for the bytes around object data
// (multipart headers), which count as neither object bytes nor client time.
func (e *Edge) write(ctx context.Context, w io.Writer, rc *http.ResponseController, p []byte) (int, error) {
	_ = rc.SetWriteDeadline(time.Now().Add(e.idleTimeout))
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	n, err := w.Write(p)
	if err != nil {
		return n, fmt.Errorf("write to client: %w", err)
	}
	return n, nil
}

// setBodyHeaders describes b: its length, type and range, and the file name to save
// it under.
func setBodyHeaders(h http.Header, b body, object string) {
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(b.length, 10))
	h.Set("Content-Type", b.contentType)
	if b.contentRange != "" {
		h.Set("Content-Range", b.contentRange)
	}
	h.Set("Content-Disposition", contentDisposition(path.Base(object)))
	h.Set("X-Content-Type-Options", "nosniff")
}

// contentDisposition is "attachment" with the file name as an ASCII fallback and, when
// that had to change it, the exact name in RFC 8187 encoding (RFC 6266 §4.3).
func contentDisposition(name string) string {
	var fallback strings.Builder
	for _, c := range []byte(name) {
		switch {
		case c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '%':
			fallback.WriteByte(c)
		case c < 0x80 || c >= 0xc0: // one '_' per character, not per UTF-8 byte
			fallback.WriteByte('_')
		}
	}
	v := `attachment; filename="` + fallback.String() + `"`
	if fallback.String() == name {
		return v
	}
	var enc strings.Builder
	const hex = "0123456789ABCDEF"
	for _, c := range []byte(name) {
		if isAttrChar(c) {
			enc.WriteByte(c)
		} else {
			enc.WriteByte('%')
			enc.WriteByte(hex[c>>4])
			enc.WriteByte(hex[c&0xf])
		}
	}
	return v + "; filename*=UTF-8''" + enc.String()
}

// isAttrChar is RFC 8187's attr-char: what may appear unencoded in a filename* value.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
