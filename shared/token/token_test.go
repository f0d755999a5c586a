package token

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

var tokenNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func testClaims() Claims {
	return Claims{
		Ticket:  "01JTICKET",
		Object:  "releases/v1.2.3/sluice-linux-amd64.tar.gz",
		ETag:    "9b2cf535f27731c974343645a3985328",
		Epoch:   3,
		Tenant:  "acme",
		RateBps: 1 << 20,
		Expires: tokenNow.Add(2 * time.Minute),
	}
}

func testKeyring(t testing.TB, active string, ids ...string) *Keyring {
	t.Helper()
	keys := make(map[string][]byte)
	for _, id := range ids {
		keys[id] = bytes.Repeat([]byte(id[:1]), MinKeyLen)
	}
	k, err := NewKeyring(active, keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t testing.TB, k *Keyring, c Claims) string {
	t.Helper()
	token, err := k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func TestTokenRoundTrip(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	want := testClaims()
	token := issue(t, k, want)
	if strings.ContainsAny(token, "+/=%?#") {
		t.Errorf("token %q has characters that need escaping in a URL path", token)
	}
	if !strings.HasPrefix(token, "k1.") || strings.Count(token, ".") != 2 {
		t.Errorf("token %q is not kid.payload.mac", token)
	}
	got, err := k.Verify(token, tokenNow)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Expires.Equal(want.Expires) {
		t.Errorf("Expires %v, want %v", got.Expires, want.Expires)
	}
	got.Expires, want.Expires = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("claims %+v, want %+v", got, want)
	}
}

// Every byte of every part is bound: changing any one of them loses the token.
func TestTokenTampering(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	token := issue(t, k, testClaims())
	for i := range len(token) {
		for _, c := range []byte{'A', 'a', '0', '_', '-', '.'} {
			if token[i] == c {
				continue
			}
			tampered := token[:i] + string(c) + token[i+1:]
			if _, err := k.Verify(tampered, tokenNow); !errors.Is(err, ErrInvalid) {
				t.Fatalf("byte %d set to %q: err %v, want ErrInvalid", i, c, err)
			}
		}
	}
	for name, bad := range map[string]string{
		"empty":            "",
		"no dots":          strings.ReplaceAll(token, ".", ""),
		"truncated":        token[:len(token)-1],
		"extended":         token + "A",
		"extra part":       token + ".AAAA",
		"newline in mac":   token[:len(token)-4] + "\n" + token[len(token)-4:],
		"padded mac":       token + "=",
		"payload swapped":  swapPayload(t, k, token),
		"too long":         token + strings.Repeat("A", MaxLen),
		"only separators":  "..",
		"unknown kid":      "k9" + token[2:],
		"kid without rest": "k1",
	} {
		if _, err := k.Verify(bad, tokenNow); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}

// swapPayload keeps kid and MAC of token but carries other claims.
func swapPayload(t testing.TB, k *Keyring, token string) string {
	t.Helper()
	other := testClaims()
	other.Object = "releases/secret.bin"
	parts := strings.Split(token, ".")
	otherParts := strings.Split(issue(t, k, other), ".")
	return parts[0] + "." + otherParts[1] + "." + parts[2]
}

func TestTokenFromAnotherKeyring(t *testing.T) {
	mine := testKeyring(t, "k1", "k1")
	theirs, err := NewKeyring("k1", map[string][]byte{"k1": GenerateKey()}) // same id, another key
	if err != nil {
		t.Fatal(err)
	}
	token := issue(t, theirs, testClaims())
	if _, err := mine.Verify(token, tokenNow); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
}

func TestKeyRotation(t *testing.T) {
	before := testKeyring(t, "k1", "k1")
	old := issue(t, before, testClaims())

	after := testKeyring(t, "k2", "k2", "k1")
	if _, err := after.Verify(old, tokenNow); err != nil {
		t.Fatalf("token of the previous key: %v", err)
	}
	fresh := issue(t, after, testClaims())
	if !strings.HasPrefix(fresh, "k2.") {
		t.Fatalf("new token %q is not signed with the active key k2", fresh)
	}
	if _, err := before.Verify(fresh, tokenNow); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a keyring without k2 verified a k2 token: %v", err)
	}

	retired := testKeyring(t, "k2", "k2")
	if _, err := retired.Verify(old, tokenNow); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token of a retired key: err %v, want ErrInvalid", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	c := testClaims()
	token := issue(t, k, c)
	for _, tc := range []struct {
		now  time.Time
		want error
	}{
		{c.Expires.Add(-time.Minute), nil},
		{c.Expires, nil}, // no new connection *after* Expires
		{c.Expires.Add(time.Nanosecond), ErrExpired},
		{c.Expires.Add(time.Hour), ErrExpired},
	} {
		if _, err := k.Verify(token, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("at %v: err %v, want %v", tc.now, err, tc.want)
		}
	}
	// Expiry is checked only on a genuine token: a forged expired token is invalid.
	forged := token[:len(token)-2] + "AA"
	if _, err := k.Verify(forged, c.Expires.Add(time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Errorf("forged expired token: err %v, want ErrInvalid", err)
	}
}

func TestIssueRefuses(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	for name, modify := range map[string]func(*Claims){
		"no ticket": func(c *Claims) { c.Ticket = "" },
		"no object": func(c *Claims) { c.Object = "" },
		"no etag":   func(c *Claims) { c.ETag = "" },
		"no expiry": func(c *Claims) { c.Expires = time.Time{} },
		"too large": func(c *Claims) { c.Object = strings.Repeat("a", MaxLen) },
	} {
		c := testClaims()
		modify(&c)
		if token, err := k.Issue(c); err == nil {
			t.Errorf("%s: issued %q", name, token)
		}
	}
}

func TestNewKeyringRefuses(t *testing.T) {
	key := GenerateKey()
	for name, tc := range map[string]struct {
		active string
		keys   map[string][]byte
	}{
		"no keys":        {"k1", nil},
		"short key":      {"k1", map[string][]byte{"k1": key[:MinKeyLen-1]}},
		"missing active": {"k2", map[string][]byte{"k1": key}},
		"dot in id":      {"k.1", map[string][]byte{"k.1": key}},
		"colon in id":    {"k:1", map[string][]byte{"k:1": key}},
		"empty id":       {"", map[string][]byte{"": key}},
		"long id":        {strings.Repeat("k", 33), map[string][]byte{strings.Repeat("k", 33): key}},
	} {
		if _, err := NewKeyring(tc.active, tc.keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewKeyringCopiesKeys(t *testing.T) {
	key := GenerateKey()
	k, err := NewKeyring("k1", map[string][]byte{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	token := issue(t, k, testClaims())
	key[0] ^= 0xff
	if _, err := k.Verify(token, tokenNow); err != nil {
		t.Fatalf("changing the caller's slice changed the keyring: %v", err)
	}
}

func TestParseKeyring(t *testing.T) {
	k1, k2 := GenerateKey(), GenerateKey()
	std, url := base64.StdEncoding.EncodeToString(k1), base64.RawURLEncoding.EncodeToString(k2)
	spec := fmt.Sprintf(" k2:%s , k1:%s ", url, std)
	ring, err := ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	token := issue(t, ring, testClaims())
	if !strings.HasPrefix(token, "k2.") {
		t.Errorf("token %q: the first entry is not the active key", token)
	}
	old, _ := NewKeyring("k1", map[string][]byte{"k1": k1})
	if _, err := ring.Verify(issue(t, old, testClaims()), tokenNow); err != nil {
		t.Errorf("the second entry does not verify: %v", err)
	}

	secret := base64.StdEncoding.EncodeToString(k1[:20]) // too short, and must not be echoed
	for _, bad := range []string{
		"",
		"k1",
		"k1:",
		"k1:not base64!",
		"k1:" + secret,
		fmt.Sprintf("k1:%s,k1:%s", std, url),
		fmt.Sprintf("k1:%s,", std),
	} {
		_, err := ParseKeyring(bad)
		if err == nil {
			t.Errorf("ParseKeyring(%q) accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), std) {
			t.Errorf("ParseKeyring error %q reveals key material", err)
		}
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	key := []byte(strings.Repeat("S3CRET", 6))
	k, err := NewKeyring("k1", map[string][]byte{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "keyring", k)
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k), logged.String()} {
		if strings.Contains(out, "S3CRET") || strings.Contains(out, base64.StdEncoding.EncodeToString(key)) {
			t.Errorf("key material in %q", out)
		}
		if !strings.Contains(out, "k1") {
			t.Errorf("%q does not name the key id", out)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	a, b := GenerateKey(), GenerateKey()
	if len(a) != MinKeyLen || bytes.Equal(a, b) {
		t.Fatalf("keys %x and %x", a, b)
	}
}

// FuzzVerify: no input makes Verify panic, and the only tokens it accepts are the ones
// the keyring issued.
func FuzzVerify(f *testing.F) {
	k := testKeyring(f, "k2", "k2", "k1")
	issued := map[string]bool{}
	for i, c := range []Claims{testClaims(), {Ticket: "t", Object: "o", ETag: "e", Expires: tokenNow}} {
		c.Epoch = int64(i)
		token := issue(f, k, c)
		issued[token] = true
		f.Add(token)
		f.Add(strings.ToUpper(token))
		f.Add(token[:len(token)/2])
		f.Add(strings.Replace(token, "k2.", "k1.", 1))
	}
	f.Add("")
	f.Add("k2..")
	f.Add("k2.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := k.Verify(token, tokenNow)
		if err == nil && !issued[token] {
			t.Fatalf("accepted a token it never issued: %q (%+v)", token, c)
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Fatalf("error %v is neither ErrInvalid nor ErrExpired", err)
		}
		if err != nil && c != (Claims{}) {
			t.Fatalf("claims %+v returned with error %v", c, err)
		}
	})
}

// A link is handed to download managers, proxies and logs: nothing in it may reveal
// the ticket (an anonymous ticket's id is its owner's capability), the tenant or the
// object, in clear or in any base64 reading of its parts.
func TestTokenClaimsAreNotReadable(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	c := testClaims()
	token := issue(t, k, c)
	readings := []string{token}
	for _, part := range strings.Split(token, ".") {
		for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.StdEncoding} {
			if raw, err := enc.DecodeString(part); err == nil {
				readings = append(readings, string(raw))
			}
		}
	}
	for _, r := range readings {
		for _, secret := range []string{c.Ticket, c.Tenant, c.Object} {
			if secret != "" && strings.Contains(r, secret) {
				t.Fatalf("the token reveals %q", secret)
			}
		}
	}
	if got, err := k.Verify(token, tokenNow); err != nil || got.Ticket != c.Ticket {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if issue(t, k, c) == token {
		t.Fatal("two tokens of the same claims are equal: the nonce is not random")
	}
}

// A token issued before Claims lost its slot member ("s") still verifies within its
// lifetime: the MAC covers the sealed bytes, and unknown members are ignored.
func TestTokenWithTheRetiredSlotClaimVerifies(t *testing.T) {
	k := testKeyring(t, "k1", "k1")
	payload := `{"t":"01JTICKET","o":"rel/a.bin","e":"etag-1","s":"01JTICKET","f":3,"x":"` +
		tokenNow.Add(time.Minute).Format(time.RFC3339Nano) + `"}`
	sealed, err := seal(k.keys["k1"], "k1", []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	signed := "k1." + b64.EncodeToString(sealed)
	got, err := k.Verify(signed+"."+mac(k.keys["k1"], signed), tokenNow)
	if err != nil || got.Ticket != "01JTICKET" || got.Object != "rel/a.bin" || got.Epoch != 3 {
		t.Fatalf("verify an old token: %+v %v", got, err)
	}
}
