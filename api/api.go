// Package api is the wire form of sluice's public HTTP API: the JSON bodies the
// ingress answers (tickets, admin stats, the fleet's nodes, release batch results)
// and the problem details (RFC 9457) of every refusal, the ingress's and the edge's.
// The server encodes these types and the client in client/ decodes them, so the two
// cannot drift; the e2e tests decode them too.
//
// The package holds types only, no server logic: the ingress converts its own records
// (admission.Position, admission.Stats) into them, at the HTTP edge where statuses are
// decided.
package api
