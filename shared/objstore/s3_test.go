package objstore

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/internal/testenv"
)

func TestS3PutLargeBodyOfUnknownSize(t *testing.T) {
	s, _ := newS3(t)
	content := randomBytes(t, 20<<20)
	info, err := s.Put(t.Context(), "releases/big.iso", hideType{bytes.NewReader(content)}, -1, "application/x-iso9660-image")
	if err != nil {
		t.Fatalf("Put of 20 MiB of unknown size: %v", err)
	}
	if info.Size != int64(len(content)) {
		t.Fatalf("stored %d bytes, want %d", info.Size, len(content))
	}
	// A multipart ETag is "<md5 of part md5s>-<parts>": 20 MiB in 16 MiB parts is 2.
	if !strings.HasSuffix(info.ETag, "-2") {
		t.Errorf("ETag %q: want a two-part multipart upload", info.ETag)
	}
	if info.ContentType != "application/x-iso9660-image" {
		t.Errorf("ContentType %q, want the one given to Put", info.ContentType)
	}
	boundary := int64(s3PartSize)
	if got := readAll(t, s, "releases/big.iso", boundary-8, 16, info.ETag); !bytes.Equal(got, content[boundary-8:boundary+8]) {
		t.Errorf("the 16 bytes across the part boundary differ")
	}
	if got := readAll(t, s, "releases/big.iso", 0, -1, info.ETag); !bytes.Equal(got, content) {
		t.Errorf("read back %d bytes that differ from the %d written", len(got), len(content))
	}
}

func TestS3MissingBucket(t *testing.T) {
	m := testenv.StartMinIO(t)
	s, err := NewS3(S3Config{
		Endpoint:  "http://" + m.Endpoint, // a URL works as well as host:port
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Bucket: "not-created-yet",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping without the bucket: %v, want ErrUnavailable", err)
	}
	if _, err := s.Stat(ctx, "a.txt"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Stat without the bucket: %v, want ErrUnavailable", err)
	}
	for range 2 { // creating is idempotent
		if err := s.EnsureBucket(ctx); err != nil {
			t.Fatalf("EnsureBucket: %v", err)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after EnsureBucket: %v", err)
	}
	if _, err := s.Stat(ctx, "a.txt"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat in the new bucket: %v, want ErrNotFound", err)
	}
}

func TestS3ServerDown(t *testing.T) {
	s, m := newS3(t)
	put(t, s, "a.txt", []byte("hello"))
	m.Stop()
	ctx := t.Context()
	_, statErr := s.Stat(ctx, "a.txt")
	_, openErr := s.Open(ctx, "a.txt", 0, -1, "")
	_, putErr := s.Put(ctx, "b.txt", strings.NewReader("x"), 1, "")
	for op, err := range map[string]error{"Stat": statErr, "Open": openErr, "Put": putErr, "Ping": s.Ping(ctx)} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the server down: %v, want ErrUnavailable", op, err)
		}
	}
	m.Start(t)
	if got := readAll(t, s, "a.txt", 0, -1, ""); string(got) != "hello" {
		t.Errorf("after restart read %q, want the object back", got)
	}
}

func TestNewS3RequiresEndpointAndBucket(t *testing.T) {
	for _, cfg := range []S3Config{{Bucket: "b"}, {Endpoint: "127.0.0.1:9000"}} {
		if _, err := NewS3(cfg); err == nil {
			t.Errorf("NewS3(%+v) succeeded, want an error", cfg)
		}
	}
}
