package workers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// ReleaseStore is the part of the object store a release worker reads.
type ReleaseStore interface {
	Stat(ctx context.Context, key string) (objstore.Info, error)
	Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error)
}

// ReleaseCatalog is the part of the catalog a release worker writes.
type ReleaseCatalog interface {
	Processed(ctx context.Context, identity string) (string, error)
	NoteDuplicate(ctx context.Context) error
	Record(ctx context.Context, r catalog.Result) (string, bool, error)
	Verified(ctx context.Context, key, etag string) (catalog.Verification, bool, error)
	StoreVerification(ctx context.Context, key, etag string, v catalog.Verification) error
	LockHashing(ctx context.Context, key, etag, owner string, ttl time.Duration) (bool, error)
	UnlockHashing(ctx context.Context, key, etag string)
	NoteDeadLettered(ctx context.Context, object, reason string) error
}

// DeadLetterer keeps events that could not be processed.
type DeadLetterer interface {
	Add(ctx context.Context, subject string, data []byte, reason string, attempts int) error
}

// ReleasesConfig configures a release worker.
type ReleasesConfig struct {
	Consumer MessageSource
	Store    ReleaseStore
	Catalog  ReleaseCatalog
	Dead     DeadLetterer
	// Bucket is the S3 bucket the store reads; MinIO notifications about other buckets
	// are dead-lettered. Empty when objects are on local disk.
	Bucket string
	// Prefix is where in Bucket the store's keys live ("" or ending in "/"): it is
	// taken off notified keys, and notifications about keys outside it are
	// dead-lettered.
	Prefix string
	// Parallel is how many events are processed at once (16): a slow or failing event
	// never holds up the others.
	Parallel int
	// MaxAttempts bounds the deliveries of an event that keeps failing (5); then it is
	// moved to the dead-letter stream.
	MaxAttempts int
	// RetryDelay is the delay before the second attempt; it doubles each time (1s, at most 30s).
	RetryDelay time.Duration
	AckWait    time.Duration // the consumer's AckWait, to pace in-progress signals (30s)
	Logger     *slog.Logger
	// OnOutcome is told how each event ended: the catalog's outcome (verified,
	// rejected, superseded), "duplicate" or "dead_lettered" (metrics); nil: nothing.
	OnOutcome func(outcome string)
}

// Releases verifies release events against the store and records them in the
// catalog, exactly once per event identity.
type Releases struct {
	cfg   ReleasesConfig
	log   *slog.Logger
	owner string

	processed, duplicates, dead atomic.Int64
}

// NewReleases returns a release worker; Run starts it.
func NewReleases(cfg ReleasesConfig) *Releases {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnOutcome == nil {
		cfg.OnOutcome = func(string) {}
	}
	return &Releases{cfg: cfg, log: cfg.Logger.With("component", "releases"), owner: rand.Text()}
}

// Run consumes release events until ctx ends; then it stops fetching (Drain), lets the
// events being processed finish, and hands the prefetched ones back at once.
func (r *Releases) Run(ctx context.Context) error {
	work := make(chan jetstream.Msg)
	cc, err := consume(r.cfg.Consumer, func(m jetstream.Msg) {
		select {
		case work <- m:
		case <-ctx.Done():
			_ = m.Nak() // prefetched during shutdown: another worker takes it now
		}
	}, 2*r.cfg.Parallel, r.log)
	if err != nil {
		return fmt.Errorf("consume release events: %w", err)
	}
	stopped := make(chan struct{}) // the consumer delivers nothing more
	var wg sync.WaitGroup
	for range r.cfg.Parallel {
		wg.Go(func() {
			for {
				select {
				case <-stopped:
					return
				case m := <-work:
					// An event being processed finishes even during shutdown.
					pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
					r.process(pctx, m)
					cancel()
				}
			}
		})
	}
	<-ctx.Done()
	stopConsuming(cc) // what the client buffered goes to the callback above, which gives it back
	close(stopped)
	wg.Wait()
	return nil
}

// Counts returns how many events this worker recorded, found already recorded, and
// dead-lettered.
func (r *Releases) Counts() (processed, duplicates, dead int64) {
	return r.processed.Load(), r.duplicates.Load(), r.dead.Load()
}

// errPermanent marks failures that no retry can fix: the event goes to the
// dead-letter stream at once.
var errPermanent = errors.New("permanent")

// releaseEvent is a decoded event, from the API or from a MinIO notification.
type releaseEvent struct {
	identity  string
	object    string
	size      int64  // -1: not stated
	sha256    string // "": not stated
	etag      string // MinIO: the notified version
	channel   string
	published time.Time
}

func (r *Releases) process(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		r.log.Error("release message without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	attempts := int(meta.NumDelivered)
	ev, skip, err := r.decode(m.Subject(), m.Data(), meta.Timestamp)
	if err != nil {
		r.deadLetter(ctx, m, "", "malformed event: "+err.Error(), attempts)
		return
	}
	if skip {
		_ = m.Ack()
		return
	}
	log := r.log.With("event", ev.identity, "object", ev.object, "attempt", attempts)
	if outcome, err := r.cfg.Catalog.Processed(ctx, ev.identity); err != nil {
		r.retry(ctx, m, ev.object, attempts, fmt.Errorf("read the processed-event set: %w", err), log)
		return
	} else if outcome != "" {
		r.duplicates.Add(1)
		r.cfg.OnOutcome("duplicate")
		_ = r.cfg.Catalog.NoteDuplicate(ctx) // a counter only: best effort
		_ = m.Ack()
		return
	}
	res, err := r.verify(ctx, m, ev)
	switch {
	case errors.Is(err, errPermanent):
		r.deadLetter(ctx, m, ev.object, err.Error(), attempts)
		return
	case errors.Is(err, errSuperseded):
		log.Info("the notified version was replaced before it was verified; its own notification follows")
		_ = m.Ack()
		return
	case err != nil:
		r.retry(ctx, m, ev.object, attempts, err, log)
		return
	}
	outcome, recorded, err := r.cfg.Catalog.Record(ctx, res)
	if err != nil {
		r.retry(ctx, m, ev.object, attempts, err, log)
		return
	}
	if recorded {
		r.processed.Add(1)
		r.cfg.OnOutcome(outcome)
		if outcome == catalog.OutcomeRejected {
			log.Warn("release rejected", "reason", res.Reason)
		} else {
			log.Debug("release recorded", "outcome", outcome)
		}
	} else {
		r.duplicates.Add(1)
		r.cfg.OnOutcome("duplicate")
	}
	if err := m.Ack(); err != nil {
		// Recorded already: a redelivery finds the event processed and acknowledges it.
		log.Warn("ack release event", "err", err)
	}
}

var errSuperseded = errors.New("object version replaced")

// verify checks the event against the stored object and returns what to record.
func (r *Releases) verify(ctx context.Context, m jetstream.Msg, ev releaseEvent) (catalog.Result, error) {
	res := catalog.Result{Identity: ev.identity, Object: ev.object, Channel: ev.channel, PublishedAt: ev.published}
	info, err := r.cfg.Store.Stat(ctx, ev.object)
	switch {
	case errors.Is(err, objstore.ErrNotFound):
		return res, fmt.Errorf("object %q is not in the store (upload it before publishing the event)", ev.object)
	case errors.Is(err, objstore.ErrInvalidKey):
		return res, fmt.Errorf("%w: %v", errPermanent, err)
	case err != nil:
		return res, fmt.Errorf("stat %q: %w", ev.object, err)
	}
	if ev.etag != "" && info.ETag != ev.etag {
		return res, errSuperseded
	}
	res.ETag, res.ContentType, res.Size = info.ETag, info.ContentType, info.Size
	if ev.size >= 0 && ev.size != info.Size {
		res.State = catalog.StateRejected
		res.SHA256 = ev.sha256
		res.Reason = fmt.Sprintf("size mismatch: the event says %d bytes, the store has %d", ev.size, info.Size)
		return res, nil
	}
	sum, err := r.checksum(ctx, m, info)
	if err != nil {
		return res, err
	}
	res.SHA256 = sum
	if ev.sha256 != "" && ev.sha256 != sum {
		res.State = catalog.StateRejected
		res.Reason = fmt.Sprintf("sha256 mismatch: the event says %s, the stored object has %s", ev.sha256, sum)
		return res, nil
	}
	res.State = catalog.StateVerified
	return res, nil
}

// checksum returns the SHA-256 of an object version, computed once however many
// events (and workers) ask: the result is cached per key and ETag, and a claim in
// Redis makes the other workers wait for it rather than hash the same bytes again.
func (r *Releases) checksum(ctx context.Context, m jetstream.Msg, info objstore.Info) (string, error) {
	lease := r.cfg.AckWait
	progress := time.Now()
	for {
		v, ok, err := r.cfg.Catalog.Verified(ctx, info.Key, info.ETag)
		if err != nil {
			return "", err
		}
		if ok && v.Size == info.Size {
			return v.SHA256, nil
		}
		mine, err := r.cfg.Catalog.LockHashing(ctx, info.Key, info.ETag, r.owner, lease)
		if err != nil {
			return "", err
		}
		if mine {
			defer r.cfg.Catalog.UnlockHashing(context.WithoutCancel(ctx), info.Key, info.ETag)
			// The previous holder may have stored its result between the first look and
			// the claim: look again before reading the bytes.
			if v, ok, err := r.cfg.Catalog.Verified(ctx, info.Key, info.ETag); err != nil {
				return "", err
			} else if ok && v.Size == info.Size {
				return v.SHA256, nil
			}
			sum, err := r.hash(ctx, m, info)
			if err != nil {
				return "", err
			}
			if err := r.cfg.Catalog.StoreVerification(ctx, info.Key, info.ETag, catalog.Verification{Size: info.Size, SHA256: sum}); err != nil {
				return "", err
			}
			return sum, nil
		}
		// Another worker is hashing this version: wait for its result, keeping the
		// message alive. If that worker dies, its claim lapses and this one takes over.
		if time.Since(progress) > lease/3 {
			_ = m.InProgress()
			progress = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// hash streams the object version through SHA-256, telling JetStream the event is in
// progress while a big object is read.
func (r *Releases) hash(ctx context.Context, m jetstream.Msg, info objstore.Info) (string, error) {
	body, err := r.cfg.Store.Open(ctx, info.Key, 0, -1, info.ETag)
	if err != nil {
		return "", fmt.Errorf("open %q to verify it: %w", info.Key, err)
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, &progressReader{r: body, every: r.cfg.AckWait / 3, tick: func() { _ = m.InProgress() }}, make([]byte, 256<<10))
	if err != nil {
		return "", fmt.Errorf("read %q to verify it: %w", info.Key, err)
	}
	if n != info.Size {
		return "", fmt.Errorf("read %q to verify it: got %d bytes, expected %d (did it change?)", info.Key, n, info.Size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type progressReader struct {
	r     io.Reader
	every time.Duration
	last  time.Time
	tick  func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	if p.last.IsZero() {
		p.last = time.Now()
	} else if time.Since(p.last) > p.every {
		p.tick()
		p.last = time.Now()
	}
	return p.r.Read(b)
}

// retry hands the event back with a growing delay, or dead-letters it once it has
// used its attempts. Other events keep flowing meanwhile: the delay is the server's.
func (r *Releases) retry(ctx context.Context, m jetstream.Msg, object string, attempts int, cause error, log *slog.Logger) {
	if attempts >= r.cfg.MaxAttempts {
		r.deadLetter(ctx, m, object, fmt.Sprintf("gave up after %d attempts: %v", attempts, cause), attempts)
		return
	}
	delay := min(r.cfg.RetryDelay<<(attempts-1), 30*time.Second)
	log.Warn("release event failed; will retry", "in", delay, "err", cause)
	_ = m.NakWithDelay(delay)
}

// deadLetter moves the event to the dead-letter stream with the reason, then
// terminates it. If the dead-letter stream cannot take it, the event is handed back
// and tried again later: it is never dropped. The object's entry, if the event left
// it pending, says why it stays so (object is "" when the event could not be read).
func (r *Releases) deadLetter(ctx context.Context, m jetstream.Msg, object, reason string, attempts int) {
	if err := r.cfg.Dead.Add(ctx, m.Subject(), m.Data(), reason, attempts); err != nil {
		r.log.Error("dead-letter release event; handing it back", "reason", reason, "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	if object != "" {
		if err := r.cfg.Catalog.NoteDeadLettered(ctx, object, reason); err != nil {
			r.log.Warn("note the dead letter on the pending catalog entry", "object", object, "err", err)
		}
	}
	r.dead.Add(1)
	r.cfg.OnOutcome("dead_lettered")
	r.log.Warn("release event dead-lettered", "subject", m.Subject(), "reason", reason, "attempts", attempts)
	_ = m.TermWithReason(reason)
}

// decode reads an event from the API subject or a MinIO notification. skip is true
// for notifications that announce no new object (deletions, for instance).
func (r *Releases) decode(subject string, data []byte, accepted time.Time) (releaseEvent, bool, error) {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD: an event whose bytes
	// are not text is not the event that was sent.
	if !utf8.Valid(data) {
		return releaseEvent{}, false, fmt.Errorf("%w: not valid UTF-8", errPermanent)
	}
	ev, skip, err := r.decodeEvent(subject, data, accepted)
	if err != nil || skip {
		return ev, skip, err
	}
	switch {
	case len(ev.identity) > maxIdentity:
		return releaseEvent{}, false, fmt.Errorf("%w: an identity of %d bytes, longer than %d", errPermanent, len(ev.identity), maxIdentity)
	case ev.size < -1:
		return releaseEvent{}, false, fmt.Errorf("%w: a size of %d bytes", errPermanent, ev.size)
	}
	return ev, false, nil
}

// maxIdentity bounds an event's identity: the longest the ingress or a MinIO
// notification makes is a bucket, a key of objstore.MaxKeyLen bytes and an ETag.
const maxIdentity = 2048

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (r *Releases) decodeEvent(subject string, data []byte, accepted time.Time) (releaseEvent, bool, error) {
	if subject == queue.ReleaseMinIOSubject || strings.HasPrefix(subject, queue.ReleaseMinIOSubject+".") {
		return r.decodeMinIO(data, accepted)
	}
	var e queue.ReleaseEvent
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&e); err != nil {
		return releaseEvent{}, false, fmt.Errorf("%w: not JSON: %v", errPermanent, err)
	}
	switch {
	case e.Identity == "":
		return releaseEvent{}, false, fmt.Errorf("%w: no identity", errPermanent)
	case objstore.ValidateKey(e.Object) != nil:
		return releaseEvent{}, false, fmt.Errorf("%w: %v", errPermanent, objstore.ValidateKey(e.Object))
	case e.Channel != "" && catalog.ValidateChannel(e.Channel) != nil:
		return releaseEvent{}, false, fmt.Errorf("%w: %v", errPermanent, catalog.ValidateChannel(e.Channel))
	case e.SHA256 != "" && !sha256Hex.MatchString(e.SHA256):
		// The ingress sends 64 lowercase hex digits; this message is not its.
		return releaseEvent{}, false, fmt.Errorf("%w: the stated SHA-256 is not 64 hex digits", errPermanent)
	}
	if e.AcceptedAt.IsZero() {
		e.AcceptedAt = accepted
	}
	return releaseEvent{identity: e.Identity, object: e.Object, size: e.Size, sha256: e.SHA256,
		channel: e.Channel, published: e.AcceptedAt}, false, nil
}

// minioLog is the part of a MinIO bucket notification (event.Log) sluice reads.
type minioLog struct {
	EventName string `json:"EventName"`
	Records   []struct {
		EventName string `json:"eventName"`
		EventTime string `json:"eventTime"`
		S3        struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key          string            `json:"key"`
				Size         int64             `json:"size"`
				ETag         string            `json:"eTag"`
				UserMetadata map[string]string `json:"userMetadata"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
}

// Object metadata `sluice publish` sets, read from MinIO notifications.
const (
	MetaChannel = "Sluice-Channel"
	MetaSHA256  = "Sluice-Sha256"
)

func (r *Releases) decodeMinIO(data []byte, accepted time.Time) (releaseEvent, bool, error) {
	var l minioLog
	if err := json.Unmarshal(data, &l); err != nil {
		return releaseEvent{}, false, fmt.Errorf("%w: not a MinIO notification: %v", errPermanent, err)
	}
	if len(l.Records) != 1 {
		return releaseEvent{}, false, fmt.Errorf("%w: a MinIO notification with %d records", errPermanent, len(l.Records))
	}
	rec := l.Records[0]
	if !strings.HasPrefix(rec.EventName, "s3:ObjectCreated:") {
		return releaseEvent{}, true, nil
	}
	bucket, o := rec.S3.Bucket.Name, rec.S3.Object
	key, err := url.QueryUnescape(o.Key)
	if err != nil {
		return releaseEvent{}, false, fmt.Errorf("%w: object key %q: %v", errPermanent, o.Key, err)
	}
	if r.cfg.Bucket == "" || bucket != r.cfg.Bucket {
		return releaseEvent{}, false, fmt.Errorf("%w: notification for bucket %q, but this sluice serves %s", errPermanent, bucket,
			servedFrom(r.cfg.Bucket))
	}
	if r.cfg.Prefix != "" {
		rel, ok := strings.CutPrefix(key, r.cfg.Prefix)
		if !ok {
			return releaseEvent{}, false, fmt.Errorf("%w: notification for %q, outside the prefix %q this sluice serves", errPermanent, key, r.cfg.Prefix)
		}
		key = rel
	}
	if err := objstore.ValidateKey(key); err != nil {
		return releaseEvent{}, false, fmt.Errorf("%w: %v", errPermanent, err)
	}
	ev := releaseEvent{
		// MinIO sets no message id and replays after reconnects: bucket, key and ETag
		// identify the notified version.
		identity: "minio:" + bucket + "/" + key + "@" + o.ETag,
		object:   key, size: o.Size, etag: o.ETag, published: accepted,
	}
	if t, err := time.Parse(time.RFC3339Nano, rec.EventTime); err == nil {
		ev.published = t
	}
	for k, v := range o.UserMetadata {
		name := strings.TrimPrefix(strings.ToLower(k), "x-amz-meta-")
		switch name {
		case strings.ToLower(MetaChannel):
			if catalog.ValidateChannel(v) == nil {
				ev.channel = v
			}
		case strings.ToLower(MetaSHA256):
			ev.sha256 = strings.ToLower(v)
		}
	}
	return ev, false, nil
}

func servedFrom(bucket string) string {
	if bucket == "" {
		return "objects from local disk"
	}
	return "bucket " + bucket
}
