package workers

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/queue"
)

// With --s3-prefix the store's keys are the bucket's keys without the prefix: a
// notification names the bucket's key, the event the store's; a key outside the
// prefix is not this sluice's and is dead-lettered.
func TestMinIONotificationUnderThePrefix(t *testing.T) {
	r := NewReleases(ReleasesConfig{Bucket: "shared", Prefix: "sluice/eu/", Logger: slog.New(slog.DiscardHandler)})
	note := func(key string) []byte {
		return []byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"shared"},` +
			`"object":{"key":"` + key + `","size":3,"eTag":"abc"}}}]}`)
	}
	ev, skip, err := r.decode(queue.ReleaseMinIOSubject, note("sluice%2Feu%2Frel%2Fapp.tar.gz"), time.Unix(1, 0))
	if err != nil || skip || ev.object != "rel/app.tar.gz" {
		t.Fatalf("decode under the prefix: object %q, skip %v, err %v; want rel/app.tar.gz", ev.object, skip, err)
	}
	if _, _, err := r.decode(queue.ReleaseMinIOSubject, note("other%2Frel%2Fapp.tar.gz"), time.Unix(1, 0)); !errors.Is(err, errPermanent) {
		t.Errorf("decode outside the prefix: %v, want a permanent error (dead letter)", err)
	}
}
