package admission

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Link is the download link of one grant, to be published (Ready).
type Link struct {
	Grant   Grant
	URL     string
	Expires time.Time // when the link stops accepting new connections
}

// Ready publishes the links of a whole admission round in one script run (one round
// trip, however many). The answer has one entry per link, in order: nil, or ErrFenced
// when that grant lapsed and its ticket went back to the queue (its link must not be
// used). The error is for the call as a whole: nothing was published, or, when the
// answer had the wrong shape, which links were is unknown.
func (l *Ledger) Ready(ctx context.Context, links []Link) ([]error, error) {
	if len(links) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 4*len(links))
	for _, k := range links {
		args = append(args, k.Grant.Ticket.ID, k.Grant.Epoch, k.URL, k.Expires.UnixMilli())
	}
	vals, err := l.run(ctx, readyScript, args...).Slice()
	if err != nil {
		return nil, unavailable(fmt.Sprintf("mark %d tickets ready", len(links)), err)
	}
	return readyFromReply(vals, len(links))
}

// readyFromReply reads ready.lua's answer for n links: "OK" or "FENCED" for each.
func readyFromReply(vals []any, n int) ([]error, error) {
	d := redisreply.New("ready")
	reply := d.Array(vals, n)
	out := make([]error, n)
	for i := range n {
		if reply.OneOf(i, "OK", "FENCED") == "FENCED" {
			out[i] = ErrFenced
		}
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// MarkReady publishes the download link of a grant. ErrFenced means the grant lapsed
// and the ticket went back to the queue: the link must not be used.
func (l *Ledger) MarkReady(ctx context.Context, g Grant, url string, expires time.Time) error {
	errs, err := l.Ready(ctx, []Link{{Grant: g, URL: url, Expires: expires}})
	if err != nil {
		return err
	}
	return errs[0]
}
