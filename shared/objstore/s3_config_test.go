package objstore

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// hermeticAWS clears the credential sources minio-go's chain would find on this
// machine, so that a test sees only the ones it sets.
func hermeticAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", dir)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
}

// roundTrip writes and reads back one object through s.
func roundTrip(t *testing.T, s *S3) {
	t.Helper()
	put(t, s, "releases/app.tar.gz", []byte("release bytes"))
	if got := readAll(t, s, "releases/app.tar.gz", 0, -1, ""); string(got) != "release bytes" {
		t.Fatalf("read back %q", got)
	}
}

func TestS3CredentialsFromTheStandardChain(t *testing.T) {
	m := testenv.StartMinIO(t)
	b := m.Bucket(t, "chain")
	cfg := S3Config{Endpoint: b.Endpoint, Bucket: b.Bucket, Region: b.Region} // no static keys

	t.Run("AWS variables", func(t *testing.T) {
		hermeticAWS(t)
		t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
		s, err := NewS3(cfg)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})

	t.Run("shared credentials file", func(t *testing.T) {
		hermeticAWS(t)
		file := filepath.Join(t.TempDir(), "credentials")
		body := "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n" +
			"[sluice]\naws_access_key_id = " + m.AccessKey + "\naws_secret_access_key = " + m.SecretKey + "\n"
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
		t.Setenv("AWS_PROFILE", "sluice")
		s, err := NewS3(cfg)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})

	// The IAM step, as a container sees it: ECS task roles and EKS Pod Identity hand
	// out credentials from an endpoint named by AWS_CONTAINER_CREDENTIALS_FULL_URI,
	// with an authorization token (given, or in a file the agent rotates). Here the
	// endpoint is a local server handing out MinIO's keys.
	roleEndpoint := func(t *testing.T, token string) string {
		t.Helper()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != token {
				http.Error(w, "wrong authorization token", http.StatusUnauthorized)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"AccessKeyId": m.AccessKey, "SecretAccessKey": m.SecretKey,
				"Token": "", "Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/v2/credentials"
	}
	t.Run("IAM role: container credentials endpoint", func(t *testing.T) {
		hermeticAWS(t)
		t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", roleEndpoint(t, "task-token"))
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "task-token")
		s, err := NewS3(cfg)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})
	t.Run("IAM role: EKS Pod Identity token file", func(t *testing.T) {
		hermeticAWS(t)
		tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
		if err := os.WriteFile(tokenFile, []byte("pod-token"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", roleEndpoint(t, "pod-token"))
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
		s, err := NewS3(cfg)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})

	t.Run("static keys come first", func(t *testing.T) {
		hermeticAWS(t)
		t.Setenv("AWS_ACCESS_KEY_ID", "wrong")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-too")
		c := cfg
		c.AccessKey, c.SecretKey = m.AccessKey, m.SecretKey
		s, err := NewS3(c)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})

	t.Run("only one static key", func(t *testing.T) {
		c := cfg
		c.AccessKey = m.AccessKey
		if _, err := NewS3(c); err == nil {
			t.Error("an access key without a secret key: want an error")
		}
	})
}

// Refused credentials are ErrUnavailable with the reason, and the breaker stays
// closed, so that every caller keeps getting the reason.
func TestS3RefusedCredentialsAreUnavailableWithTheReason(t *testing.T) {
	m := testenv.StartMinIO(t)
	b := m.Bucket(t, "denied")
	for name, cfg := range map[string]S3Config{
		"wrong secret":   {AccessKey: m.AccessKey, SecretKey: "not-the-secret"},
		"unknown key":    {AccessKey: "nobody-" + m.AccessKey, SecretKey: m.SecretKey},
		"no credentials": {},
	} {
		t.Run(name, func(t *testing.T) {
			hermeticAWS(t)
			// IAM would look for an instance role: point it at nothing that answers.
			t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds")
			cfg.Endpoint, cfg.Bucket, cfg.Region = b.Endpoint, b.Bucket, b.Region
			s, err := NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			store := NewBreaker(s, "objects", BreakerOptions{ConsecutiveFailures: 2})
			for range 4 {
				_, err := store.Stat(t.Context(), "a.txt")
				var denied *AccessError
				if !errors.Is(err, ErrUnavailable) || !errors.As(err, &denied) {
					t.Fatalf("Stat: %v, want ErrUnavailable with an *AccessError", err)
				}
			}
			if got := store.State(); got != "closed" {
				t.Errorf("breaker is %s after refused credentials, want closed (the reason reaches every caller)", got)
			}
			_, err = store.Put(t.Context(), "a.txt", strings.NewReader("x"), 1, "")
			var denied *AccessError
			if !errors.As(err, &denied) || denied.Code == "" {
				t.Errorf("Put: %v, want an *AccessError naming S3's code", err)
			}
			if err := store.Ping(t.Context()); !errors.As(err, &denied) {
				t.Errorf("Ping: %v, want an *AccessError", err)
			}
		})
	}
}

func TestS3PrefixPlacesEveryKeyUnderIt(t *testing.T) {
	m := testenv.StartMinIO(t)
	b := m.Bucket(t, "shared-bucket")
	s, err := NewS3(S3Config{Endpoint: b.Endpoint, AccessKey: b.AccessKey, SecretKey: b.SecretKey,
		Bucket: b.Bucket, Region: b.Region, Prefix: "/sluice/eu/"})
	if err != nil {
		t.Fatal(err)
	}
	info := put(t, s, "releases/app.tar.gz", []byte("prefixed"))
	if info.Key != "releases/app.tar.gz" {
		t.Errorf("Info.Key %q, want the key without the prefix", info.Key)
	}
	ctx := t.Context()
	client := m.Client(t)
	if _, err := client.StatObject(ctx, b.Bucket, "sluice/eu/releases/app.tar.gz", minio.StatObjectOptions{}); err != nil {
		t.Errorf("the object is not at sluice/eu/releases/app.tar.gz in the bucket: %v", err)
	}
	if _, err := client.StatObject(ctx, b.Bucket, "releases/app.tar.gz", minio.StatObjectOptions{}); err == nil {
		t.Error("the object is also at the bucket's root")
	}
	if got := readAll(t, s, "releases/app.tar.gz", 2, 4, info.ETag); string(got) != "efix" {
		t.Errorf("read %q through the prefix", got)
	}
	link, err := s.Presign(ctx, "releases/app.tar.gz", time.Minute, "app.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "prefixed" {
		t.Errorf("presigned link answered %d %q, want the object", resp.StatusCode, body)
	}
	if s.Prefix() != "sluice/eu/" {
		t.Errorf("Prefix() = %q, want sluice/eu/", s.Prefix())
	}
	if _, err := NewS3(S3Config{Endpoint: b.Endpoint, Bucket: b.Bucket, Prefix: "a/../b"}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("prefix a/../b: %v, want ErrInvalidKey", err)
	}
}

// MinIO encrypts only with a KMS; its built-in single-key KMS is enough for both
// SSE-S3 and SSE-KMS.
func TestS3ServerSideEncryption(t *testing.T) {
	m := testenv.StartMinIOWithKMS(t)
	b := m.Bucket(t, "encrypted")
	for _, tc := range []struct{ sse, header, keyID string }{
		{"s3", "AES256", ""},
		{"kms:" + testenv.MinIOKMSKey, "aws:kms", testenv.MinIOKMSKey},
	} {
		t.Run(tc.sse, func(t *testing.T) {
			s, err := NewS3(S3Config{Endpoint: b.Endpoint, AccessKey: b.AccessKey, SecretKey: b.SecretKey,
				Bucket: b.Bucket, Region: b.Region, SSE: tc.sse})
			if err != nil {
				t.Fatal(err)
			}
			key := "sse/" + strings.ReplaceAll(tc.sse, ":", "-") + ".bin"
			put(t, s, key, []byte("secret release"))
			oi, err := m.Client(t).StatObject(context.Background(), b.Bucket, key, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := oi.Metadata.Get("X-Amz-Server-Side-Encryption"); got != tc.header {
				t.Errorf("stored with X-Amz-Server-Side-Encryption %q, want %q", got, tc.header)
			}
			if tc.keyID != "" {
				if got := oi.Metadata.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"); !strings.HasSuffix(got, tc.keyID) {
					t.Errorf("stored with KMS key %q, want %s", got, tc.keyID)
				}
			}
			if got := readAll(t, s, key, 0, -1, ""); string(got) != "secret release" {
				t.Errorf("read back %q", got)
			}
		})
	}
	for _, bad := range []string{"aes", "kms", "kms:", "SSE-C"} {
		if _, err := ParseSSE(bad); err == nil {
			t.Errorf("ParseSSE(%q): want an error", bad)
		}
	}
}

// An S3 stand-in over HTTPS with its own CA: trusted with --s3-ca-file, refused
// without it.
func TestS3CAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-amz-request-id", "stand-in")
		w.WriteHeader(http.StatusOK) // HEAD bucket: it exists
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "stand-in.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := S3Config{Endpoint: srv.URL, Bucket: "stand-in", AccessKey: "k", SecretKey: "s", Region: "us-east-1"}
	untrusting, err := NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := untrusting.Ping(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping without the CA: %v, want ErrUnavailable (an unknown authority)", err)
	}
	cfg.CAFile = caFile
	trusting, err := NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trusting.Ping(t.Context()); err != nil {
		t.Errorf("Ping with --s3-ca-file naming the server's CA: %v", err)
	}

	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{notPEM, filepath.Join(dir, "missing.pem")} {
		if _, err := NewS3(S3Config{Endpoint: "https://127.0.0.1:1", Bucket: "b", CAFile: file}); err == nil {
			t.Errorf("CA file %s: want an error", file)
		}
	}
}
