package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/notification"
)

// MinIONATSTarget is the id of the NATS notification target StartMinIONotifying
// configures; its ARN is arn:minio:sqs::SLUICE:nats.
const MinIONATSTarget = "SLUICE"

// StartMinIONotifying starts MinIO (as StartMinIO) with a NATS notification target
// that publishes, through JetStream, to subject on the NATS server at natsURL. The
// JetStream stream for subject must exist before objects are written.
func StartMinIONotifying(tb testing.TB, natsURL, subject string) *MinIO {
	tb.Helper()
	addr := strings.TrimPrefix(natsURL, "nats://")
	return startMinIO(tb, []string{
		"MINIO_NOTIFY_NATS_ENABLE_" + MinIONATSTarget + "=on",
		"MINIO_NOTIFY_NATS_ADDRESS_" + MinIONATSTarget + "=" + addr,
		"MINIO_NOTIFY_NATS_SUBJECT_" + MinIONATSTarget + "=" + subject,
		"MINIO_NOTIFY_NATS_JETSTREAM_" + MinIONATSTarget + "=on",
	})
}

// NotifyBucket creates the bucket and has MinIO announce every object created in it
// to the NATS target.
func (m *MinIO) NotifyBucket(tb testing.TB, name string) MinIOBucket {
	tb.Helper()
	b := m.Bucket(tb, name)
	arn := notification.NewArn("minio", "sqs", "", MinIONATSTarget, "nats")
	q := notification.NewConfig(arn)
	q.AddEvents(notification.ObjectCreatedAll)
	cfg := notification.Configuration{}
	cfg.AddQueue(q)
	// MinIO brings its notification targets up in the background after it is live:
	// until then the target's ARN is unknown.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Client(tb).SetBucketNotification(ctx, name, cfg)
		cancel()
		if err == nil {
			return b
		}
		if time.Now().After(deadline) {
			tb.Fatalf("set the notification of bucket %q on minio %s: %v", name, describe(m.Process), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
