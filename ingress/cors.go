package ingress

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// CORS lets browser code on other origins call the API: the origins allowed are
// configured (Config.CORSOrigins); with none, no CORS headers are sent and preflights
// are not answered. Keys travel in the Authorization header, never in cookies, so
// credentials are not allowed and "*" is safe to use.
const (
	corsAllowMethods  = "GET, HEAD, POST, PUT, DELETE"
	corsAllowHeaders  = "Authorization, Content-Type, Content-Digest, Idempotency-Key, X-API-Key"
	corsExposeHeaders = "Location, Retry-After"
	corsMaxAge        = "600"
)

// ParseCORSOrigins reads a comma-separated list of origins (scheme://host[:port])
// or "*" for any; empty is no CORS.
func ParseCORSOrigins(list string) ([]string, error) {
	var origins []string
	for o := range strings.SplitSeq(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
				return nil, fmt.Errorf("CORS origin %q is not scheme://host[:port] (like https://app.example.com) or *", o)
			}
			o = u.Scheme + "://" + strings.ToLower(u.Host)
		}
		origins = append(origins, o)
	}
	return origins, nil
}

// cors wraps next with the CORS headers for the configured origins, answering
// preflight requests itself.
func (s *Server) cors(next http.Handler) http.Handler {
	if len(s.cfg.CORSOrigins) == 0 {
		return next
	}
	anyOrigin := false
	allowed := make(map[string]bool, len(s.cfg.CORSOrigins))
	for _, o := range s.cfg.CORSOrigins {
		anyOrigin = anyOrigin || o == "*"
		allowed[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Add("Vary", "Origin") // the answer depends on it, for every cache on the way
		origin := r.Header.Get("Origin")
		ok := origin != "" && (anyOrigin || allowed[strings.ToLower(origin)])
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !ok {
			if preflight {
				writeProblem(w, r, &apiError{Status: http.StatusForbidden, Code: "cors_origin_not_allowed",
					Message: "cross-origin requests from this origin are not allowed",
					Hint:    "an operator adds the origin to SLUICE_CORS_ORIGINS"})
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if anyOrigin {
			hdr.Set("Access-Control-Allow-Origin", "*")
		} else {
			hdr.Set("Access-Control-Allow-Origin", origin)
		}
		if preflight {
			hdr.Set("Access-Control-Allow-Methods", corsAllowMethods)
			hdr.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			hdr.Set("Access-Control-Max-Age", corsMaxAge)
			hdr.Add("Vary", "Access-Control-Request-Method")
			hdr.Add("Vary", "Access-Control-Request-Headers")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		hdr.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}
