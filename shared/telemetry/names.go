// Package telemetry is how sluice shows what it does: the Prometheus metrics of every
// role (names in this file, collectors in metrics.go and collectors.go), OpenTelemetry
// tracing with W3C trace context carried across NATS and into download tokens
// (tracing.go), and the slog handler that stamps log lines with the trace id (log.go).
//
// Nothing here is global: each process builds one Metrics (with its own registry) and
// one Tracing in cmd/sluice and passes them to the components that report.
package telemetry

// Metric names, one constant per family. Dashboards (deployments/grafana) and alerts
// refer to these; MetricNames lists them all and a test checks that the registry holds
// exactly these families, so a dashboard can be checked against the code.
const (
	// Every role.
	NameBuildInfo           = "sluice_build_info"                         // gauge {role, version} = 1
	NameHTTPRequests        = "sluice_http_requests_total"                // counter {server, route, code}
	NameHTTPRequestDuration = "sluice_http_request_duration_seconds"      // histogram {server, route}
	NameHTTPOpenConnections = "sluice_http_open_connections"              // gauge {server}
	NameRedisDuration       = "sluice_redis_command_duration_seconds"     // histogram {command}
	NameRedisErrors         = "sluice_redis_command_errors_total"         // counter {command}
	NameNATSPublishDuration = "sluice_nats_publish_duration_seconds"      // histogram {stream}
	NameNATSPublishErrors   = "sluice_nats_publish_errors_total"          // counter {stream}
	NameStorageDuration     = "sluice_storage_operation_duration_seconds" // histogram {operation}
	NameStorageErrors       = "sluice_storage_operation_errors_total"     // counter {operation}
	NameBreakerState        = "sluice_breaker_state"                      // gauge {breaker, state} one-hot

	// Admission figures read from the ledger at scrape time, the whole system's: one
	// ingress at a time exports them (LedgerCollectorOptions.Leader), every ingress
	// exports NameLedgerUp. LedgerNames lists them.
	NameTickets                = "sluice_tickets"                          // gauge {state}: queued, admitting, ready, streaming
	NameTicketsEnded           = "sluice_tickets_ended_total"              // counter {state}: done, expired, failed, canceled
	NameQueueBacklog           = "sluice_queue_backlog_tickets"            // gauge
	NameQueueAdmissibleBacklog = "sluice_queue_admissible_backlog_tickets" // gauge: what more workers could admit now
	NameSlotsInUse             = "sluice_slots_in_use"                     // gauge, global
	NameSlotsLimit             = "sluice_slots_limit"                      // gauge, global
	NameTenantSlotsInUse       = "sluice_tenant_slots_in_use"              // gauge {tenant}, top tenants + "other"
	NameTenantSlotsLimit       = "sluice_tenant_slots_limit"               // gauge {tenant}, 0 = no own limit
	NameTenantQueued           = "sluice_tenant_queued_tickets"            // gauge {tenant}
	NameAdmissionPaused        = "sluice_admission_paused"                 // gauge 0/1
	NameLedgerUp               = "sluice_ledger_up"                        // gauge: 1 if this process's last ledger read worked

	// Workers.
	NameAdmissions    = "sluice_admissions_total"     // counter: tickets given a download link
	NameTicketWait    = "sluice_ticket_wait_seconds"  // histogram: created -> ready
	NameHeldTickets   = "sluice_worker_held_tickets"  // gauge: ticket messages held in progress
	NameReleaseEvents = "sluice_release_events_total" // counter {outcome} (workers/releases.go)

	// Edge.
	NameEdgeSentBytes       = "sluice_edge_sent_bytes_total"           // counter: object bytes sent
	NameEdgeZeroCopyBytes   = "sluice_edge_zero_copy_sent_bytes_total" // counter: of which with sendfile
	NameEdgeActiveStreams   = "sluice_edge_active_streams"             // gauge: responses streaming now
	NameEdgeActiveDownloads = "sluice_edge_active_downloads"           // gauge: distinct downloads among them
	NameTokenRejections     = "sluice_edge_token_rejections_total"     // counter {reason}

	// Edge disk cache (shared/edgecache), when --edge-cache-dir is set.
	NameEdgeCacheRequests      = "sluice_edge_cache_requests_total"              // counter {result}: hit, miss, stale
	NameEdgeCacheBytes         = "sluice_edge_cache_read_bytes_total"            // counter {source}: cache, origin
	NameEdgeCacheEvictions     = "sluice_edge_cache_evictions_total"             // counter
	NameEdgeCacheVerifyFailed  = "sluice_edge_cache_verification_failures_total" // counter: copies discarded
	NameEdgeCacheFillErrors    = "sluice_edge_cache_fill_errors_total"           // counter: origin or disk failed a fill
	NameEdgeCacheUsedBytes     = "sluice_edge_cache_used_bytes"                  // gauge
	NameEdgeCacheCapacityBytes = "sluice_edge_cache_capacity_bytes"              // gauge
)

// Reasons a download is refused at the edge: the label values of NameTokenRejections,
// and what signer.RefusalReason answers (the one set of them).
const (
	RejectInvalid       = "invalid"        // forged, tampered or malformed link (403)
	RejectExpired       = "expired"        // the link's start window passed (410)
	RejectSlotNotHeld   = "slot_not_held"  // the ticket's slot lapsed, was released or re-granted (410)
	RejectTooMany       = "too_many"       // too many connections on one link (429)
	RejectObjectChanged = "object_changed" // the object changed since the ticket (410)
)

// Release event outcomes (label values of NameReleaseEvents), reported by the release
// worker (workers/releases.go, ReleasesConfig.OnOutcome).
const (
	ReleaseVerified     = "verified"      // size and SHA-256 match: catalogued
	ReleaseRejected     = "rejected"      // they do not: catalogued as rejected, never served
	ReleaseSuperseded   = "superseded"    // a newer event for the object was recorded first
	ReleaseDuplicate    = "duplicate"     // this event was processed before
	ReleaseDeadLettered = "dead_lettered" // malformed, or kept failing: moved to the dead-letter stream
)

// MetricNames lists every metric family sluice can export, across all roles.
func MetricNames() []string {
	return []string{
		NameBuildInfo, NameHTTPRequests, NameHTTPRequestDuration, NameHTTPOpenConnections,
		NameRedisDuration, NameRedisErrors, NameNATSPublishDuration, NameNATSPublishErrors,
		NameStorageDuration, NameStorageErrors, NameBreakerState,
		NameTickets, NameTicketsEnded, NameQueueBacklog, NameQueueAdmissibleBacklog,
		NameSlotsInUse, NameSlotsLimit, NameTenantSlotsInUse, NameTenantSlotsLimit, NameTenantQueued,
		NameAdmissionPaused, NameLedgerUp,
		NameAdmissions, NameTicketWait, NameHeldTickets, NameReleaseEvents,
		NameEdgeSentBytes, NameEdgeZeroCopyBytes, NameEdgeActiveStreams, NameEdgeActiveDownloads, NameTokenRejections,
		NameEdgeCacheRequests, NameEdgeCacheBytes, NameEdgeCacheEvictions, NameEdgeCacheVerifyFailed,
		NameEdgeCacheFillErrors, NameEdgeCacheUsedBytes, NameEdgeCacheCapacityBytes,
	}
}

// LedgerNames lists the families read from the admission ledger that only the leading
// ingress exports: system-wide figures, which dashboards and alerts aggregate with
// max() (sum() for the rate of the counter) and never filter by instance.
func LedgerNames() []string {
	return []string{NameTickets, NameTicketsEnded, NameQueueBacklog, NameQueueAdmissibleBacklog,
		NameSlotsInUse, NameSlotsLimit, NameTenantSlotsInUse, NameTenantSlotsLimit, NameTenantQueued,
		NameAdmissionPaused}
}
