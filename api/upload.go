package api

// Upload is the answer to an upload (PUT /api/v1/uploads/{key}): what the store now
// holds under the key.
type Upload struct {
	Object      string `json:"object"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"` // computed by the server from the bytes it stored
	ETag        string `json:"etag"`
	ContentType string `json:"content_type"`
	// Stored is false when the store already held these bytes (a verified catalog
	// entry with the same digest) and the body was not read.
	Stored bool `json:"stored"`
}
