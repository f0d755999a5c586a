package signer

import (
	"sync"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// versions remembers, for a short while, that the store answered an object is at the
// version a token names, so that a download manager's many small ranges do not each
// cost a Stat (a round trip to S3, a few syscalls on a local disk).
//
// Only that answer is kept: a version that differs, a missing object or a failure is
// asked again on the next request. Bytes never come from what is remembered: every
// Open still names the version (If-Match at S3, the open file's own stat on a local
// disk), so a version replaced in the store within the TTL is refused before the first
// byte (410, and the answer is forgotten) or, on a connection that kept its file, the
// bytes are still those of the version the link names. Requests that open nothing
// (HEAD, 304, 412, 416) may answer for the old version until the TTL lapses. The edge
// cache vouches for versions itself (Cache.StatVersion) and is not doubled by this.
type versions struct {
	ttl time.Duration // 0: remember nothing

	mu   sync.Mutex
	seen map[versionKey]versionSeen
}

type versionKey struct{ object, etag string }

type versionSeen struct {
	info objstore.Info
	at   time.Time
}

// maxVersions bounds what is remembered: past it the set starts over, which costs one
// Stat per object at most.
const maxVersions = 4096

func (v *versions) get(object, etag string, now time.Time) (objstore.Info, bool) {
	if v.ttl <= 0 {
		return objstore.Info{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.seen[versionKey{object, etag}]
	if !ok || now.Sub(s.at) >= v.ttl {
		return objstore.Info{}, false
	}
	return s.info, true
}

// put remembers info if it is the version etag, asked at at.
func (v *versions) put(object, etag string, info objstore.Info, at time.Time) {
	if v.ttl <= 0 || info.ETag != etag {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil || len(v.seen) >= maxVersions {
		v.seen = make(map[versionKey]versionSeen)
	}
	v.seen[versionKey{object, etag}] = versionSeen{info: info, at: at}
}

// forget drops what is remembered of the version: Open found it gone.
func (v *versions) forget(object, etag string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.seen, versionKey{object, etag})
}
