// Package api is the wire form of sluice's public HTTP API: the JSON bodies the
// ingress reads and answers (tickets, admin stats and limits, the fleet's nodes,
// release events and batch results, catalog entries, dead letters, uploads) and the
// problem details (RFC 9457) of every refusal, the ingress's and the edge's.
// The server encodes these types and the client in client/ decodes them, so the two
// cannot drift; the e2e tests decode them too.
//
// The package holds types only, no server logic: the ingress converts its own records
// (admission.Position, admission.Stats, admission.Limits, catalog.Entry,
// queue.DeadLetter) into them, one function each, at the HTTP edge where statuses are
// decided.
package api
