package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Buckets of the records that live in JetStream KV, replicated and synced like the
// ticket stream. Redis keeps only what can be rebuilt from them (docs/ARCHITECTURE.md,
// "Records and derived state").
const (
	KeysBucket        = "SLUICE_KEYS"          // API keys: id -> hash of the secret, scope, tenant
	SettingsBucket    = "SLUICE_SETTINGS"      // "limits": the operator's limits, weights and pause
	IdempotencyBucket = "SLUICE_IDEMPOTENCY"   // Idempotency-Key bindings -> ticket id
	EndedBucket       = "SLUICE_TICKETS_ENDED" // tickets that ended, kept for --retain
)

// RecordConfig describes one record bucket.
type RecordConfig struct {
	Bucket      string
	Description string
	Replicas    int           // as the ticket stream's: 1 on one machine, 3 in a cluster
	TTL         time.Duration // how long a key lives after its last write; 0 = forever
}

// EnsureRecords creates or updates a record bucket, retried until ctx ends (Ensure):
// on a fresh cluster the meta leader may still be settling and the first attempts
// time out.
func EnsureRecords(ctx context.Context, js jetstream.JetStream, c RecordConfig) (jetstream.KeyValue, error) {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	cfg := jetstream.KeyValueConfig{
		Bucket: c.Bucket, Description: c.Description, Replicas: c.Replicas,
		TTL: c.TTL, Storage: jetstream.FileStorage, History: 1,
	}
	return Ensure(ctx, "create record bucket "+c.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	})
}
