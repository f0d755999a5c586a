package api

// ReleaseResult is the answer to a batch of release events (POST /api/v1/releases).
// A refused batch answers problem details with the same members as extensions, and
// not_accepted.
type ReleaseResult struct {
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Rejected   []RejectedLine `json:"rejected"`
}

// RejectedLine is a line of a batch that was not accepted, and why.
type RejectedLine struct {
	Line  int    `json:"line"` // 1-based line of the NDJSON batch
	Error string `json:"error"`
}
