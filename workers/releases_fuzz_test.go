package workers

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// FuzzDecodeReleaseEvent: decoding a release message (the ingress's JSON event or a
// MinIO notification) never panics, and an event it accepts is made of valid UTF-8,
// names a valid object key, has a bounded identity, a size of -1 (not stated) or
// more, a SHA-256 of 64 hex digits when the ingress stated one, and a valid channel.
func FuzzDecodeReleaseEvent(f *testing.F) {
	sum := strings.Repeat("ab", 32)
	for _, s := range []struct {
		minio bool
		data  string
	}{
		{false, `{"identity":"id:e1","object":"rel/app.tar.gz","sha256":"` + sum + `","size":10,"channel":"stable"}`},
		{false, `{"identity":"obj:rel/a@` + sum + `","object":"rel/a","sha256":"` + sum + `","size":0}`},
		{false, `{"identity":"id:e1","object":"../etc/passwd","size":1}`},
		{false, `{"identity":"id:e1","object":"a","sha256":"nothex","size":1}`},
		{false, `{"identity":"id:\xff","object":"a","size":1}`},
		{false, `{"identity":"x","object":"a","size":-5}`},
		{false, `not json`},
		{true, `{"EventName":"s3:ObjectCreated:Put","Records":[{"eventName":"s3:ObjectCreated:Put","eventTime":"2025-03-14T15:09:26Z",` +
			`"s3":{"bucket":{"name":"releases"},"object":{"key":"rel%2Fapp.tar.gz","size":10,"eTag":"abc",` +
			`"userMetadata":{"X-Amz-Meta-Sluice-Channel":"stable","X-Amz-Meta-Sluice-Sha256":"` + sum + `"}}}}]}`},
		{true, `{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"releases"},"object":{"key":"%ff%fe"}}}]}`},
		{true, `{"Records":[{"eventName":"s3:ObjectRemoved:Delete","s3":{"bucket":{"name":"releases"},"object":{"key":"a"}}}]}`},
		{true, `{"Records":[]}`},
	} {
		f.Add(s.minio, []byte(s.data))
	}
	r := NewReleases(ReleasesConfig{Bucket: "releases", Logger: slog.New(slog.DiscardHandler)})
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	f.Fuzz(func(t *testing.T, minio bool, data []byte) {
		subject := queue.ReleaseAPISubject
		if minio {
			subject = queue.ReleaseMinIOSubject
		}
		ev, skip, err := r.decode(subject, data, time.Unix(1, 0))
		if err != nil || skip {
			return
		}
		if !utf8.Valid(data) {
			t.Fatalf("accepted a message that is not valid UTF-8: %q", data)
		}
		for _, v := range []string{ev.identity, ev.object, ev.sha256, ev.etag, ev.channel} {
			if !utf8.ValidString(v) {
				t.Fatalf("accepted an event with the invalid UTF-8 %q", v)
			}
		}
		switch {
		case objstore.ValidateKey(ev.object) != nil:
			t.Fatalf("accepted the object key %q: %v", ev.object, objstore.ValidateKey(ev.object))
		case ev.identity == "" || len(ev.identity) > maxIdentity:
			t.Fatalf("accepted an identity of %d bytes", len(ev.identity))
		case ev.size < -1:
			t.Fatalf("accepted a size of %d", ev.size)
		case !minio && ev.sha256 != "" && !hex64.MatchString(ev.sha256):
			t.Fatalf("accepted the SHA-256 %q", ev.sha256)
		case ev.channel != "" && catalog.ValidateChannel(ev.channel) != nil:
			t.Fatalf("accepted the channel %q", ev.channel)
		}
	})
}
