package workers

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/shared/token"
)

// Presigner makes links that fetch an object straight from storage (objstore.S3).
type Presigner interface {
	Presign(ctx context.Context, key string, ttl time.Duration, filename string) (string, error)
}

// EdgeChooser picks the edge that serves an object (fleet.EdgeChooser): the public
// URL of a live edge, or "" for none, when links use PublicEdgeURL.
type EdgeChooser interface {
	EdgeURL(ctx context.Context, key string) string
}

// link makes the download link of an admitted ticket: a signed edge link carrying the
// tenant's bandwidth cap, or in direct mode a presigned storage URL.
//
// A tenant's rate comes with each grant (admit.lua reads it as it admits), so a
// change applies to tickets admitted after it.
func (a *Admission) link(ctx context.Context, g admission.Grant, expires time.Time) (string, error) {
	t := g.Ticket
	name := path.Base(t.Object)
	if a.cfg.Direct != nil {
		u, err := a.cfg.Direct.Presign(ctx, t.Object, expires.Sub(a.cfg.Now()), name)
		if err != nil {
			return "", fmt.Errorf("presign: %w", err)
		}
		return u, nil
	}
	signed, err := a.cfg.Tokens.Issue(token.Claims{
		Ticket: t.ID, Object: t.Object, ETag: t.ETag, Epoch: g.Epoch,
		Tenant: t.Tenant, RateBps: g.RateBps, Expires: expires, Trace: telemetry.TraceParent(ctx),
	})
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	base := a.cfg.PublicEdgeURL
	if a.cfg.Edges != nil {
		// The same object on the same few edges, so that each keeps it in its cache.
		if u := a.cfg.Edges.EdgeURL(ctx, t.Object); u != "" {
			base = strings.TrimRight(u, "/")
		}
	}
	return base + "/d/" + signed + "/" + url.PathEscape(name), nil
}
