package objstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/sluice-dl/sluice/shared/certpool"
)

const (
	// s3PartSize is the multipart part size: big enough that a 1 GiB upload is 64
	// requests, small enough that an upload of unknown size buffers little.
	s3PartSize = 16 << 20
	// s3MaxRetries caps minio-go's attempts (10 by default, several seconds of
	// backoff against a dead endpoint): one retry rides out a blip, and an outage is
	// reported within about half a second so the breaker decides what happens next.
	s3MaxRetries = 2
	// s3HeaderTimeout bounds the wait for response headers of a hung server on calls
	// that carry no deadline (Open and Put stream for long and cannot have one).
	s3HeaderTimeout = 15 * time.Second
	s3DialTimeout   = 5 * time.Second
)

// S3Config locates one bucket of an S3-compatible service.
type S3Config struct {
	Endpoint string // host:port, or a URL whose scheme sets UseSSL
	// AccessKey and SecretKey are static credentials. Both empty: minio-go's standard
	// chain finds them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the shared
	// credentials file with AWS_PROFILE, then IAM: IRSA's web identity token, the
	// container or instance role).
	AccessKey string
	SecretKey string
	Bucket    string
	// Prefix is where in the bucket the store lives: every key is stored under
	// Prefix + "/" (empty: at the bucket's root).
	Prefix string
	UseSSL bool
	Region string // empty: let the client discover it (MinIO: us-east-1)
	// CAFile is a PEM bundle of certificate authorities trusted beyond the system's.
	CAFile string
	// SSE asks for server-side encryption of every object written: "" (the bucket's
	// default), "s3" (SSE-S3) or "kms:<key-id>" (SSE-KMS).
	SSE string
}

// S3 is a Store over one bucket of MinIO or AWS S3.
type S3 struct {
	core   minio.Core
	bucket string
	prefix string // "" or ending in "/"
	region string
	sse    encrypt.ServerSide // nil: none asked for
}

var _ Store = (*S3)(nil)

// NewS3 returns a store for cfg. It does not contact the service: use Ping or
// EnsureBucket for that.
func NewS3(cfg S3Config) (*S3, error) {
	endpoint, secure := cfg.Endpoint, cfg.UseSSL
	if u, err := url.Parse(cfg.Endpoint); err == nil && u.Host != "" {
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	if endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3 store: endpoint and bucket are required")
	}
	prefix, err := s3Prefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	sse, err := ParseSSE(cfg.SSE)
	if err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: s3DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = s3HeaderTimeout
	if cfg.CAFile != "" {
		pool, err := certpool.FromFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 store CA bundle: %w", err)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	creds, err := s3Credentials(cfg)
	if err != nil {
		return nil, err
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:      creds,
		Secure:     secure,
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: %w", endpoint, err)
	}
	return &S3{core: minio.Core{Client: client}, bucket: cfg.Bucket, prefix: prefix, region: cfg.Region, sse: sse}, nil
}

// s3Credentials are the static keys when set, minio-go's standard chain otherwise.
func s3Credentials(cfg S3Config) (*credentials.Credentials, error) {
	switch {
	case cfg.AccessKey != "" && cfg.SecretKey != "":
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), nil
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		return nil, errors.New("s3 store: set both the access key and the secret key, or neither (for AWS_* variables, the shared credentials file or an IAM role)")
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport, Timeout: 10 * time.Second}},
	}), nil
}

// s3Prefix turns "releases/eu" or "/releases/eu/" into "releases/eu/".
func s3Prefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if err := ValidateKey(p); err != nil {
		return "", fmt.Errorf("s3 store prefix: %w", err)
	}
	return p + "/", nil
}

// ParseSSE reads a server-side encryption setting: "" none, "s3" SSE-S3,
// "kms:<key-id>" SSE-KMS with that key.
func ParseSSE(v string) (encrypt.ServerSide, error) {
	switch kind, keyID, _ := strings.Cut(v, ":"); {
	case v == "":
		return nil, nil
	case v == "s3":
		return encrypt.NewSSE(), nil
	case kind == "kms" && keyID != "":
		sse, err := encrypt.NewSSEKMS(keyID, nil)
		if err != nil {
			return nil, fmt.Errorf("s3 store SSE-KMS: %w", err)
		}
		return sse, nil
	}
	return nil, fmt.Errorf("s3 store: server-side encryption %q: want s3 or kms:<key-id>", v)
}

// Bucket is the bucket the store lives in.
func (s *S3) Bucket() string { return s.bucket }

// Prefix is where in the bucket the store lives: "" or a path ending in "/".
func (s *S3) Prefix() string { return s.prefix }

// object is where key lives in the bucket.
func (s *S3) object(key string) string { return s.prefix + key }

// EnsureBucket creates the bucket unless it exists.
func (s *S3) EnsureBucket(ctx context.Context) error {
	ok, err := s.core.BucketExists(ctx, s.bucket)
	if err != nil {
		return s3Error("find bucket", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.core.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return s3Error("create bucket", s.bucket, err)
	}
	return nil
}

// Stat returns the current version of key.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	oi, err := s.core.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s3Error("stat", key, err)
	}
	return s3Info(key, oi), nil
}

// Open fetches exactly the requested section in one request, which fails at once
// (not on the first Read) when the object is missing or has changed.
func (s *S3) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("open %q: %w", key, checkRange(offset, length, 0))
	}
	if length == 0 {
		// No Range header can ask for zero bytes: check the version and bounds only.
		return s.openEmpty(ctx, key, offset, etag)
	}
	var opts minio.GetObjectOptions
	if etag != "" {
		if err := opts.SetMatchETag(etag); err != nil {
			return nil, fmt.Errorf("open %q: %w", key, err)
		}
	}
	switch {
	case length > 0:
		err := opts.SetRange(offset, offset+length-1)
		if err != nil {
			return nil, fmt.Errorf("open %q: %w", key, err)
		}
	case offset > 0:
		// SetRange(offset, 0) means "offset to the end"; SetRange(0, 0) would be the
		// first byte only, so a whole-object read sends no Range at all.
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, fmt.Errorf("open %q: %w", key, err)
		}
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, s.object(key), opts)
	if err != nil {
		return nil, s3Error("open", key, err)
	}
	// A range running past the end comes back short rather than failing; Open
	// promises exactly the section asked for.
	if length > 0 && oi.Size != length {
		body.Close()
		return nil, fmt.Errorf("open %q: %w: %d bytes at offset %d, server has %d", key, errRange, length, offset, oi.Size)
	}
	return body, nil
}

func (s *S3) openEmpty(ctx context.Context, key string, offset int64, etag string) (io.ReadCloser, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if etag != "" && etag != info.ETag {
		return nil, fmt.Errorf("open %q: has ETag %s, want %s: %w", key, info.ETag, etag, ErrChanged)
	}
	if err := checkRange(offset, 0, info.Size); err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	return http.NoBody, nil
}

// Put uploads r, in 16 MiB parts when it is large or of unknown size (minio-go
// aborts the multipart upload on failure, so no partial object appears).
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (Info, error) {
	return s.PutWithMetadata(ctx, key, r, size, contentType, nil)
}

// PutWithMetadata is Put with user metadata (x-amz-meta-*), which MinIO's
// notifications carry (sluice publish sets the release channel there).
func (s *S3) PutWithMetadata(ctx context.Context, key string, r io.Reader, size int64, contentType string, meta map[string]string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if contentType == "" {
		contentType = defaultContentType(key)
	}
	src, body := newSource(r, size)
	_, err := s.core.Client.PutObject(ctx, s.bucket, s.object(key), body, size, minio.PutObjectOptions{
		ContentType:          contentType,
		UserMetadata:         meta,
		PartSize:             s3PartSize,
		ServerSideEncryption: s.sse,
	})
	if err != nil {
		if srcErr := src.failure(); srcErr != nil {
			// The body broke (a client went away): nothing to do with the store.
			return Info{}, fmt.Errorf("put %q: read body: %w", key, srcErr)
		}
		return Info{}, s3Error("put", key, err)
	}
	// The upload's answer has no Last-Modified; the stored version's metadata is
	// one HEAD away.
	return s.Stat(ctx, key)
}

// Ping checks that the service answers and the bucket exists.
func (s *S3) Ping(ctx context.Context) error {
	ok, err := s.core.BucketExists(ctx, s.bucket)
	if err != nil {
		return s3Error("ping bucket", s.bucket, err)
	}
	if !ok {
		return fmt.Errorf("%w: bucket %q does not exist", ErrUnavailable, s.bucket)
	}
	return nil
}

func s3Info(key string, oi minio.ObjectInfo) Info {
	ct := oi.ContentType
	if ct == "" {
		ct = defaultContentType(key)
	}
	return Info{Key: key, Size: oi.Size, ETag: oi.ETag, ContentType: ct, ModTime: oi.LastModified}
}

// s3Error maps minio-go errors onto the package's sentinels. What the server said
// about the object keeps its meaning; a server that cannot serve (5xx, throttling,
// missing bucket), refuses the credentials (an *AccessError) or cannot be reached is
// ErrUnavailable. A context that ended is
// left as it is: only the caller knows whether that was its own doing.
func s3Error(op, name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		// No S3 answer at all: refused, reset, timed out, DNS.
		return fmt.Errorf("%w: %s %q: %w", ErrUnavailable, op, name, err)
	}
	switch {
	case resp.Code == minio.NoSuchKey:
		return fmt.Errorf("%s %q: %w", op, name, ErrNotFound)
	case resp.Code == minio.PreconditionFailed || resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%s %q: %w", op, name, ErrChanged)
	case resp.Code == minio.InvalidRange || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s %q: %w", op, name, errRange)
	case accessCodes[resp.Code] || resp.StatusCode == http.StatusUnauthorized ||
		resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s %q: %w", op, name, &AccessError{Code: resp.Code, Message: resp.Message})
	case resp.Code == minio.NoSuchBucket,
		resp.StatusCode >= 500,
		resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("%w: %s %q: %w", ErrUnavailable, op, name, err)
	}
	return fmt.Errorf("%s %q: %w", op, name, err)
}

// accessCodes are the S3 error codes of a request the service would not authorize.
var accessCodes = map[string]bool{
	"AccessDenied": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true,
	"AllAccessDisabled": true, "AccountProblem": true, "InvalidSecurity": true,
}

// AccessError is storage refusing sluice's credentials (wrong or missing keys, a
// role without the permission, a key the KMS will not use): the store answers but is
// of no use until an operator fixes its configuration, so it is ErrUnavailable.
type AccessError struct {
	Code    string // S3's error code, as AccessDenied or SignatureDoesNotMatch
	Message string // what the service said
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("object storage refused the credentials: %s: %s", e.Code, e.Message)
}

// Is makes an AccessError an ErrUnavailable.
func (e *AccessError) Is(target error) bool { return target == ErrUnavailable }

// source watches a Put's body, so that a body that fails or ends early is reported
// as such, and not as the store failing (minio-go surfaces both as request errors).
type source struct {
	r    io.Reader
	size int64 // -1: unknown
	pos  int64

	mu  sync.Mutex // err is read by Put while the HTTP transport may still be reading
	err error
}

// seekableSource keeps a seekable body seekable, which lets minio-go retry a PUT.
type seekableSource struct{ *source }

// newSource returns the watcher and the reader to hand to minio-go.
func newSource(r io.Reader, size int64) (*source, io.Reader) {
	s := &source{r: r, size: size}
	if _, ok := r.(io.Seeker); ok {
		return s, seekableSource{s}
	}
	return s, s
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.pos += int64(n)
	switch {
	case errors.Is(err, io.EOF) && s.size >= 0 && s.pos < s.size:
		s.setErr(fmt.Errorf("body ended after %d of %d bytes: %w", s.pos, s.size, io.ErrUnexpectedEOF))
	case err != nil && !errors.Is(err, io.EOF):
		s.setErr(err)
	}
	return n, err
}

func (s seekableSource) Seek(offset int64, whence int) (int64, error) {
	pos, err := s.r.(io.Seeker).Seek(offset, whence)
	if err == nil {
		s.pos = pos
		s.setErr(nil)
	}
	return pos, err
}

func (s *source) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// failure returns what went wrong with the body, if anything.
func (s *source) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
