package ingress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

const (
	// MaxReleaseBatch is the most events one POST /api/v1/releases may carry.
	MaxReleaseBatch = 10_000
	// maxReleaseBody bounds that request's body: 10,000 events with long keys.
	maxReleaseBody = 32 << 20
	// maxEventBytes bounds one event (one NDJSON line, or a single JSON body): a
	// 1,024-byte key written entirely in \u escapes, the hash, the size, a 256-byte
	// event id and a channel fit several times over. A longer line is rejected as it is
	// read, never buffered, so a request costs this much memory for its line however
	// long its lines are.
	maxEventBytes = 16 << 10
)

// ReleaseQueue stores accepted release events durably.
type ReleaseQueue interface {
	PublishBatch(ctx context.Context, events []queue.ReleaseEvent) (queue.BatchResult, error)
	Backlog(ctx context.Context) (uint64, error)
}

// Catalog is the part of the release catalog the ingress reads.
type Catalog interface {
	Lookup(ctx context.Context, key string) (catalog.Entry, error)
	Recorded(ctx context.Context, key string) (catalog.Entry, error)
	Resolve(ctx context.Context, name string) (string, bool, error)
	MarkPending(ctx context.Context, ps []catalog.Pending) error
	Stats(ctx context.Context) (catalog.Stats, error)
}

// DeadLetters lists and replays release events that could not be processed.
type DeadLetters interface {
	List(ctx context.Context, after uint64, limit int) ([]queue.DeadLetter, error)
	Replay(ctx context.Context, id uint64) (queue.DeadLetter, error)
	Count(ctx context.Context) (uint64, error)
}

// ReleasesConfig wires the release API. Without a Queue the publish API answers 503;
// without a Catalog downloads are not checked against it.
type ReleasesConfig struct {
	Queue       ReleaseQueue
	Catalog     Catalog
	DeadLetters DeadLetters
	// RequirePublished refuses downloads of objects the catalog has not verified.
	// Objects the catalog lists as rejected are refused whatever this says.
	RequirePublished bool
}

// routeReleases adds the release API: publishing, the catalog, and the operators'
// view of dead-lettered events.
func (s *Server) routeReleases(api *gin.RouterGroup) {
	api.POST("/releases", s.requireScope(apikeys.ScopePublisher), s.boundLargeBodies, s.publishReleases)
	api.GET("/objects/*key", s.getObject)
	admin := api.Group("/admin/releases", s.requireScope(apikeys.ScopeOperator))
	admin.GET("/dead", s.listDeadReleases)
	admin.POST("/dead/:id/replay", s.replayDeadRelease)
	admin.GET("/stats", s.releaseStats)
}

// releaseEventJSON decodes an api.ReleaseEvent. Its required members are pointers
// here, shadowing the wire type's, to tell a missing member from a zero one.
type releaseEventJSON struct {
	api.ReleaseEvent
	Object *string `json:"object"`
	SHA256 *string `json:"sha256"`
	Size   *int64  `json:"size"`
}

var (
	sha256Pattern  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	eventIDPattern = regexp.MustCompile(`^[\x21-\x7e]{1,256}$`)
)

// parseReleaseEvent validates one event. The error says what is wrong, for a person.
func parseReleaseEvent(raw []byte) (queue.ReleaseEvent, error) {
	var j releaseEventJSON
	if !utf8.Valid(raw) {
		return queue.ReleaseEvent{}, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return queue.ReleaseEvent{}, fmt.Errorf("not a valid JSON event: %v", err)
	}
	if dec.More() {
		return queue.ReleaseEvent{}, errors.New("more than one JSON value on the line")
	}
	switch {
	case j.Object == nil:
		return queue.ReleaseEvent{}, errors.New(`"object" is required`)
	case j.SHA256 == nil:
		return queue.ReleaseEvent{}, errors.New(`"sha256" is required (64 hex digits)`)
	case j.Size == nil:
		return queue.ReleaseEvent{}, errors.New(`"size" is required (bytes)`)
	}
	ev := j.ReleaseEvent
	ev.Object, ev.SHA256, ev.Size = *j.Object, strings.ToLower(*j.SHA256), *j.Size
	if err := objstore.ValidateKey(ev.Object); err != nil {
		return queue.ReleaseEvent{}, err
	}
	if !sha256Pattern.MatchString(ev.SHA256) {
		return queue.ReleaseEvent{}, fmt.Errorf(`"sha256" must be 64 hex digits, got %d characters`, len(*j.SHA256))
	}
	if ev.Size < 0 {
		return queue.ReleaseEvent{}, fmt.Errorf(`"size" must be 0 or more, got %d`, ev.Size)
	}
	if ev.Channel != "" {
		if err := catalog.ValidateChannel(ev.Channel); err != nil {
			return queue.ReleaseEvent{}, err
		}
	}
	if ev.EventID != "" && !eventIDPattern.MatchString(ev.EventID) {
		return queue.ReleaseEvent{}, errors.New(`"event_id" must be 1 to 256 printable ASCII characters without spaces`)
	}
	return releaseMessage(ev), nil
}

// releaseMessage is a valid event as the release stream carries it: the one
// conversion from the wire to the queue. Its identity is its event id or, without
// one, the same artifact announced twice is the same event.
func releaseMessage(ev api.ReleaseEvent) queue.ReleaseEvent {
	identity := "obj:" + ev.Object + "@" + ev.SHA256
	if ev.EventID != "" {
		identity = "id:" + ev.EventID
	}
	return queue.ReleaseEvent{Identity: identity, ReleaseEvent: ev}
}

func isNDJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		return true
	}
	return false
}

// readReleaseBatch reads the body: one JSON event, or NDJSON with one event a line,
// decoded line by line as it arrives. Blank lines are skipped; line numbers count every
// line from 1.
func readReleaseBatch(c *gin.Context) (events []queue.ReleaseEvent, rejected []api.RejectedLine, err error) {
	rejected = []api.RejectedLine{}
	if !isNDJSON(c.ContentType()) {
		raw, err := io.ReadAll(io.LimitReader(c.Request.Body, maxEventBytes+1))
		if err != nil {
			return nil, nil, bodyError(err)
		}
		if len(raw) > maxEventBytes {
			return nil, nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "event_too_large",
				Message: fmt.Sprintf("one event is at most %d bytes", maxEventBytes),
				Hint:    "for several events send NDJSON with Content-Type: application/x-ndjson, one event a line"}
		}
		ev, perr := parseReleaseEvent(bytes.TrimSpace(raw))
		if perr != nil {
			return nil, nil, badRequest("invalid_event", "the event is not valid: "+perr.Error(),
				`send {"object", "sha256", "size", "event_id", "channel"}; for several events send NDJSON with Content-Type: application/x-ndjson`)
		}
		return []queue.ReleaseEvent{ev}, rejected, nil
	}
	lines := newLineReader(c.Request.Body, maxEventBytes)
	for line := 1; ; line++ {
		raw, tooLong, rerr := lines.next()
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, nil, bodyError(rerr)
		}
		if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 || tooLong {
			if len(events)+len(rejected) >= MaxReleaseBatch {
				return nil, nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "too_many_events",
					Message: fmt.Sprintf("a batch carries at most %d events", MaxReleaseBatch),
					Hint:    "split the batch; nothing of this one was stored"}
			}
			if tooLong {
				rejected = append(rejected, api.RejectedLine{Line: line, Error: fmt.Sprintf("longer than %d bytes: one event is at most that", maxEventBytes)})
			} else if ev, perr := parseReleaseEvent(trimmed); perr != nil {
				rejected = append(rejected, api.RejectedLine{Line: line, Error: perr.Error()})
			} else {
				events = append(events, ev)
			}
		}
		if errors.Is(rerr, io.EOF) {
			return events, rejected, nil
		}
	}
}

// lineReader reads lines of at most max bytes into one reused buffer; the rest of a
// longer line is skipped as it arrives.
type lineReader struct{ br *bufio.Reader }

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, max)}
}

// next returns the next line (valid until the following call) without its end, or
// tooLong when it was longer than the buffer. err is io.EOF after the last line.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	line, err = l.br.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		tooLong, line = true, nil
		_, err = l.br.ReadSlice('\n')
	}
	return line, tooLong, err
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: fmt.Sprintf("request body larger than %d bytes", mbe.Limit),
			Hint:    fmt.Sprintf("send at most %d events per request; nothing of this one was stored", MaxReleaseBatch)}
	}
	if isBodyTimeout(err) {
		return &apiError{Status: http.StatusRequestTimeout, Code: "body_timeout",
			Message: "the request body arrived too slowly", Hint: "nothing of this request was stored; send it again", cause: err}
	}
	return badRequest("invalid_body", "could not read the body: "+err.Error(), "")
}

// publishReleases accepts release events. The answer comes after every PubAck:
// accepted events are durably in the release stream, duplicates were recognised by
// their Nats-Msg-Id, and rejected lines are listed with the reason.
func (s *Server) publishReleases(c *gin.Context) {
	rel := s.cfg.Releases
	if rel.Queue == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "releases_disabled",
			Message: "this ingress does not accept release events", Hint: "send them to an ingress connected to NATS", RetryAfter: 30})
		return
	}
	events, rejected, err := readReleaseBatch(c)
	if err != nil {
		c.Error(err)
		return
	}
	if len(events) == 0 {
		c.Error(&apiError{Status: http.StatusBadRequest, Code: "no_valid_events",
			Message: "the batch has no valid event", Hint: "each line is one JSON event; see rejected",
			Fields: gin.H{"accepted": 0, "duplicates": 0, "rejected": rejected}})
		return
	}
	// One microsecond apart: a later line of the batch is a newer release, which is
	// what a channel alias follows.
	now := s.cfg.Now().UTC()
	for i := range events {
		events[i].AcceptedAt = now.Add(time.Duration(i) * time.Microsecond)
	}
	ctx := c.Request.Context()
	res, err := rel.Queue.PublishBatch(ctx, events)
	if err != nil {
		c.Error(releasePublishError(err, res, rejected))
		s.log.Warn("release batch only partly stored", "events", len(events), "accepted", res.Accepted,
			"duplicates", res.Duplicates, "not_stored", res.NotStored, "err", err)
		return
	}
	if rel.Catalog != nil {
		pending := make([]catalog.Pending, 0, len(events))
		for i, ev := range events {
			if res.Stored[i] {
				pending = append(pending, catalog.Pending{Object: ev.Object, Size: ev.Size, SHA256: ev.SHA256,
					PublishedAt: ev.AcceptedAt, Channel: ev.Channel})
			}
		}
		// Best effort: the events are safe in JetStream; the worker records the result.
		if err := rel.Catalog.MarkPending(ctx, pending); err != nil {
			s.log.Warn("mark published objects pending", "err", err)
		}
	}
	s.log.Info("release events accepted", "accepted", res.Accepted, "duplicates", res.Duplicates,
		"rejected", len(rejected), "by", principal(c).ID)
	c.JSON(http.StatusAccepted, api.ReleaseResult{Accepted: res.Accepted, Duplicates: res.Duplicates, Rejected: rejected})
}

// releasePublishError says how much of the batch went in before the stream refused.
func releasePublishError(err error, res queue.BatchResult, rejected []api.RejectedLine) *apiError {
	fields := gin.H{"accepted": res.Accepted, "duplicates": res.Duplicates, "not_accepted": res.NotStored, "rejected": rejected}
	hint := "send the whole batch again after Retry-After: events already stored are recognised and counted as duplicates, never stored twice"
	if errors.Is(err, queue.ErrFull) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "release_queue_full",
			Message: fmt.Sprintf("the release queue is full: %d events of the batch were not accepted", res.NotStored),
			Hint:    hint, RetryAfter: 5, Fields: fields, cause: err}
	}
	return &apiError{Status: http.StatusServiceUnavailable, Code: "queue_unavailable",
		Message: fmt.Sprintf("the release queue is not answering: %d events of the batch were not accepted", res.NotStored),
		Hint:    hint, RetryAfter: 2, Fields: fields, cause: err}
}

// catalogUnavailable is the answer when the catalog could not be read. It names the
// dependency that did not answer (the catalog's records are in NATS, its aliases and
// pending entries in Redis), so that an operator looks at the right one.
func catalogUnavailable(err error) *apiError {
	msg, code := "the release catalog cannot be read right now", "catalog_unavailable"
	var ue *catalog.UnavailableError
	if errors.As(err, &ue) {
		msg = "the release catalog cannot be read: " + ue.Dependency + " is not answering"
		code = ue.Dependency + "_unavailable" // redis_unavailable, nats_unavailable: as every other answer
	}
	return &apiError{Status: http.StatusServiceUnavailable, Code: code,
		Message: msg, Hint: "retry after the indicated delay", RetryAfter: 2, cause: err}
}

// getObject returns the catalog entry of an object or channel alias.
func (s *Server) getObject(c *gin.Context) {
	cat := s.cfg.Releases.Catalog
	if cat == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "catalog_disabled", Message: "this ingress has no release catalog"})
		return
	}
	name := strings.TrimPrefix(c.Param("key"), "/")
	if err := objstore.ValidateKey(name); err != nil {
		c.Error(err)
		return
	}
	ctx := c.Request.Context()
	key, alias, err := cat.Resolve(ctx, name)
	if err != nil {
		c.Error(catalogUnavailable(err))
		return
	}
	e, err := cat.Lookup(ctx, key)
	if errors.Is(err, catalog.ErrNotFound) {
		hint := "publish it with `sluice publish FILE --channel <channel>` or POST /api/v1/releases"
		if _, _, serr := s.objects.stat(ctx, key); serr == nil {
			hint = "the object is in storage but was never published; " + hint
		}
		if ch, ok := strings.CutSuffix(name, catalog.AliasSuffix); ok && catalog.ValidateChannel(ch) == nil {
			hint = "channel " + ch + " has no verified release yet; " + hint
		}
		c.Error(&apiError{Status: http.StatusNotFound, Code: "object_not_catalogued",
			Message: fmt.Sprintf("%q is not in the release catalog", name), Hint: hint, cause: err})
		return
	}
	if err != nil {
		c.Error(catalogUnavailable(err))
		return
	}
	if alias {
		c.Header("Content-Location", "/api/v1/objects/"+e.Object)
	}
	c.JSON(http.StatusOK, wireEntry(e))
}

// wireEntry is a catalog entry as the API shows it: the one conversion from the
// catalog's to the wire.
func wireEntry(e catalog.Entry) api.CatalogEntry {
	return api.CatalogEntry{Object: e.Object, Size: e.Size, SHA256: e.SHA256, ETag: e.ETag, ContentType: e.ContentType,
		PublishedAt: e.PublishedAt, Channel: e.Channel, State: e.State, Reason: e.Reason}
}

// resolveName turns a channel alias ("stable/latest") into the key of the object it
// names now; any other name is the key itself.
func (s *Server) resolveName(ctx context.Context, name string) (string, error) {
	if s.cfg.Releases.Catalog == nil {
		return name, nil
	}
	key, _, err := s.cfg.Releases.Catalog.Resolve(ctx, name)
	if err != nil {
		return "", catalogUnavailable(err)
	}
	return key, nil
}

// statPublished resolves a download request's object through the catalog (channel
// aliases), refuses what the catalog rejected (and, with RequirePublished, what it
// has not verified), and returns the stored version to serve. An object's record is
// read from the ingress's copy of the catalog (catalog.Follow) when it has one, so a
// download of a recorded object, and any download without RequirePublished, costs no
// round trip here; only under RequirePublished is an unrecorded object's pending
// entry read in Redis, to say why it is refused.
func (s *Server) statPublished(ctx context.Context, name string) (objstore.Info, error) {
	rel := s.cfg.Releases
	key, err := s.resolveName(ctx, name)
	if err != nil {
		return objstore.Info{}, err
	}
	if rel.Catalog == nil {
		info, _, err := s.objects.stat(ctx, key)
		return info, err
	}
	e, err := rel.Catalog.Recorded(ctx, key)
	if errors.Is(err, catalog.ErrNotFound) {
		if !rel.RequirePublished {
			// Without RequirePublished only a rejection (a record) refuses an object.
			info, _, err := s.objects.stat(ctx, key)
			return info, err
		}
		e, err = rel.Catalog.Lookup(ctx, key)
	}
	switch {
	case errors.Is(err, catalog.ErrNotFound) || redisOnly(err):
		return objstore.Info{}, &apiError{Status: http.StatusNotFound, Code: "object_not_published",
			Message: fmt.Sprintf("%q has not been published", name),
			Hint:    "this server serves only published, verified releases; publish it with `sluice publish`", cause: err}
	case err != nil:
		return objstore.Info{}, catalogUnavailable(err)
	case e.State == catalog.StateRejected:
		return objstore.Info{}, &apiError{Status: http.StatusConflict, Code: "object_rejected",
			Message: fmt.Sprintf("%q failed verification and is not served: %s", key, e.Reason),
			Hint:    "publish a correct artifact (or a corrected event) to replace it"}
	}
	info, remembered, err := s.objects.stat(ctx, key)
	if err == nil && remembered && e.ETag != "" && e.ETag != info.ETag {
		// The catalog knows another version than the one remembered: ask the store.
		info, err = s.objects.recheck(ctx, key)
	}
	if err != nil || !rel.RequirePublished {
		return info, err
	}
	switch {
	case e.State == catalog.StatePending && e.Reason != "":
		return objstore.Info{}, &apiError{Status: http.StatusConflict, Code: "object_pending",
			Message: fmt.Sprintf("%q is not verified: %s", key, e.Reason),
			Hint:    "ask an operator to fix and replay the event (GET /api/v1/admin/releases/dead), or publish it again"}
	case e.State == catalog.StatePending:
		return objstore.Info{}, &apiError{Status: http.StatusConflict, Code: "object_pending",
			Message: fmt.Sprintf("%q is being verified", key), Hint: "retry after the indicated delay", RetryAfter: 5}
	case e.ETag != info.ETag:
		return objstore.Info{}, &apiError{Status: http.StatusConflict, Code: "object_changed",
			Message: fmt.Sprintf("%q changed in storage since it was verified", key),
			Hint:    "publish the new version so that it is verified"}
	}
	return info, nil
}

// redisOnly reports whether the catalog failed only on its derived part in Redis.
func redisOnly(err error) bool {
	var ue *catalog.UnavailableError
	return errors.As(err, &ue) && ue.Dependency == "redis"
}

func (s *Server) listDeadReleases(c *gin.Context) {
	dl := s.cfg.Releases.DeadLetters
	if dl == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "releases_disabled", Message: "this ingress has no release queue"})
		return
	}
	after, _ := strconv.ParseUint(c.Query("after"), 10, 64)
	limit, err := strconv.Atoi(c.DefaultQuery("limit", "100"))
	if err != nil || limit < 1 || limit > 1000 {
		c.Error(badRequest("invalid_limit", "limit must be 1 to 1000", ""))
		return
	}
	list, err := dl.List(c.Request.Context(), after, limit)
	if err != nil {
		c.Error(err)
		return
	}
	body := api.DeadLetters{Dead: make([]api.DeadLetter, len(list))}
	for i, d := range list {
		body.Dead[i] = wireDeadLetter(d)
	}
	if len(list) == limit {
		body.Next = fmt.Sprintf("/api/v1/admin/releases/dead?after=%d&limit=%d", list[len(list)-1].ID, limit)
	}
	c.JSON(http.StatusOK, body)
}

// wireDeadLetter is a dead letter as the API shows it: the one conversion from the
// queue's to the wire.
func wireDeadLetter(d queue.DeadLetter) api.DeadLetter {
	return api.DeadLetter{ID: d.ID, Subject: d.Subject, Reason: d.Reason, Attempts: d.Attempts, DeadAt: d.DeadAt, Event: d.Event}
}

func (s *Server) replayDeadRelease(c *gin.Context) {
	dl := s.cfg.Releases.DeadLetters
	if dl == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "releases_disabled", Message: "this ingress has no release queue"})
		return
	}
	id, err := strconv.ParseUint(c.Param("id"), 10, 64)
	if err != nil {
		c.Error(badRequest("invalid_id", "dead-letter ids are numbers", "GET /api/v1/admin/releases/dead lists them"))
		return
	}
	d, err := dl.Replay(c.Request.Context(), id)
	if errors.Is(err, queue.ErrDeadNotFound) {
		c.Error(&apiError{Status: http.StatusNotFound, Code: "dead_letter_not_found", Message: err.Error(),
			Hint: "GET /api/v1/admin/releases/dead lists them; a replayed one is gone from the list", cause: err})
		return
	}
	if err != nil {
		c.Error(err)
		return
	}
	s.log.Info("dead-lettered release event replayed", "id", id, "reason", d.Reason, "by", principal(c).ID)
	c.JSON(http.StatusAccepted, api.Replayed{Replayed: wireDeadLetter(d)})
}

func (s *Server) releaseStats(c *gin.Context) {
	rel := s.cfg.Releases
	if rel.Catalog == nil || rel.Queue == nil || rel.DeadLetters == nil {
		c.Error(&apiError{Status: http.StatusServiceUnavailable, Code: "releases_disabled", Message: "this ingress has no release queue"})
		return
	}
	ctx := c.Request.Context()
	st, err := rel.Catalog.Stats(ctx)
	if err != nil {
		c.Error(catalogUnavailable(err))
		return
	}
	backlog, err := rel.Queue.Backlog(ctx)
	if err != nil {
		c.Error(err)
		return
	}
	dead, err := rel.DeadLetters.Count(ctx)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, api.ReleaseStats{Catalog: api.CatalogCounters(st), Backlog: backlog, Dead: dead})
}
