package apikeys_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/redisreply"
)

func TestKeys(t *testing.T) {
	ctx := t.Context()
	kv, err := queue.EnsureRecords(ctx, testenv.StartNATS(t).JetStream(t), queue.RecordConfig{Bucket: queue.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	boot := apikeys.Generate()
	s := apikeys.New(kv, boot)

	k, secret, err := s.Create(ctx, apikeys.ScopePublisher, "acme", "ci")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Check(ctx, secret)
	if err != nil || got.ID != k.ID || got.Scope != apikeys.ScopePublisher || got.Tenant != "acme" {
		t.Fatalf("check: %+v %v", got, err)
	}
	// Only the hash is stored: the secret appears nowhere in the record.
	e, err := kv.Get(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value()), secret[len("slk_12345678_"):]) {
		t.Fatalf("the secret is stored in clear: %s", e.Value())
	}
	// the secret with its last character changed (to another one of its alphabet)
	last := "a"
	if strings.HasSuffix(secret, last) {
		last = "b"
	}
	for _, bad := range []string{"", "slk_", secret + "x", secret[:len(secret)-1] + last, "slk_aaaaaaaa_" + secret[13:], "Bearer " + secret} {
		if _, err := s.Check(ctx, bad); !errors.Is(err, apikeys.ErrInvalidKey) {
			t.Errorf("key %q: %v, want ErrInvalidKey", bad, err)
		}
	}
	if op, err := s.Check(ctx, boot); err != nil || op.Scope != apikeys.ScopeOperator {
		t.Fatalf("bootstrap key: %+v %v", op, err)
	}
	list, _ := s.List(ctx)
	if len(list) != 1 || list[0].ID != k.ID {
		t.Fatalf("list: %+v", list)
	}
	if err := s.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, secret); !errors.Is(err, apikeys.ErrInvalidKey) {
		t.Fatal("a revoked key still works")
	}
	if err := s.Revoke(ctx, k.ID); !errors.Is(err, apikeys.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	if !apikeys.ScopeOperator.Allows(apikeys.ScopeClient) || apikeys.ScopeClient.Allows(apikeys.ScopePublisher) {
		t.Fatal("scope order is wrong")
	}
}

// Keys an earlier version kept in Redis (hashes under sluice:keys:) keep working after
// the upgrade: the first start imports them into JetStream, once.
func TestImportKeysFromRedis(t *testing.T) {
	ctx := t.Context()
	kv, err := queue.EnsureRecords(ctx, testenv.StartNATS(t).JetStream(t), queue.RecordConfig{Bucket: queue.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t).Client(t)
	secret := strings.Repeat("a", 32)
	sum := sha256.Sum256([]byte(secret))
	rdb.HSet(ctx, "sluice:keys:abcdefgh", "hash", hex.EncodeToString(sum[:]), "scope", "publisher", "tenant", "acme", "name", "ci", "created", 1700000000)
	s := apikeys.New(kv, "")
	for want := range []int{1, 0} {
		n, err := s.ImportRedis(ctx, rdb, "")
		if err != nil || n != 1-want {
			t.Fatalf("import %d: %d %v", want, n, err)
		}
	}
	k, err := s.Check(ctx, "slk_abcdefgh_"+secret)
	if err != nil || k.Scope != apikeys.ScopePublisher || k.Tenant != "acme" || k.Name != "ci" {
		t.Fatalf("imported key: %+v %v", k, err)
	}
}

// A key the earlier version kept whose creation time does not parse, or that is not a
// hash, is left behind with an error naming it and the field, instead of a key created
// at 1970; every other key is still imported.
func TestImportRefusesAMistypedKey(t *testing.T) {
	ctx := t.Context()
	kv, err := queue.EnsureRecords(ctx, testenv.StartNATS(t).JetStream(t), queue.RecordConfig{Bucket: queue.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t).Client(t)
	sum := sha256.Sum256([]byte(strings.Repeat("a", 32)))
	rdb.HSet(ctx, "sluice:keys:abcdefgh", "hash", hex.EncodeToString(sum[:]), "scope", "publisher", "created", "last tuesday")
	rdb.Set(ctx, "sluice:keys:notahash", "x", 0)
	for _, id := range []string{"goodaaaa", "goodbbbb", "zzzzzzzz"} {
		rdb.HSet(ctx, "sluice:keys:"+id, "hash", hex.EncodeToString(sum[:]), "scope", "client", "tenant", "acme", "created", "1700000000")
	}
	store := apikeys.New(kv, "")
	n, err := store.ImportRedis(ctx, rdb, "")
	if !errors.Is(err, redisreply.ErrShape) || !strings.Contains(err.Error(), `API key abcdefgh reply.created: want an integer, got "last tuesday"`) ||
		!strings.Contains(err.Error(), "sluice:keys:notahash") || !strings.Contains(err.Error(), "2 left behind") {
		t.Fatalf("import a key created %q and a string: %v, want an error naming both", "last tuesday", err)
	}
	keys, lerr := store.List(ctx)
	if n != 3 || lerr != nil || len(keys) != 3 {
		t.Fatalf("imported %d, listed %d (%v): want the three good keys whatever the scan order", n, len(keys), lerr)
	}
}

// What cannot be created as asked is ErrInvalidRequest, refused before anything is
// stored, with the limit in the message.
func TestCreateRefusesInvalidRequests(t *testing.T) {
	s := apikeys.New(nil, "") // never reached: the request is refused first
	for name, mentions := range map[string]string{
		strings.Repeat("n", apikeys.MaxNameLen+1): "201 characters long, longer than 200 characters",
		strings.Repeat("名", 300):                  "300 characters long, longer than 200 characters",
		"tab\there":                               "control character U+0009",
		"bad\xffutf8":                             "not valid UTF-8",
	} {
		_, _, err := s.Create(t.Context(), apikeys.ScopeClient, "acme", name)
		if !errors.Is(err, apikeys.ErrInvalidRequest) || !strings.Contains(err.Error(), mentions) {
			t.Errorf("name of %d bytes: %v, want ErrInvalidRequest saying %q", len(name), err, mentions)
		}
	}
	if _, _, err := s.Create(t.Context(), "root", "acme", "x"); !errors.Is(err, apikeys.ErrInvalidRequest) {
		t.Errorf("unknown scope: %v, want ErrInvalidRequest", err)
	}
}
