package ingress

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/shared/apikeys"
)

const principalKey = "sluice.principal"

// anonymous is who calls without a key when client keys are not required.
var anonymous = apikeys.Key{ID: "anonymous", Scope: apikeys.ScopeClient, Tenant: publicTenant}

// presentedKey reads "Authorization: Bearer <key>" or "X-API-Key: <key>". The scheme
// is matched in any case (RFC 9110 §11.1: "bearer" is "Bearer"). An Authorization
// header in another scheme, or a bare key with no scheme, is refused with a hint
// rather than guessed at: a key pasted without "Bearer " would otherwise work in one
// place and fail behind any proxy or client that follows the RFC.
func presentedKey(r *http.Request) (string, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return r.Header.Get("X-API-Key"), nil
	}
	scheme, credentials, _ := strings.Cut(strings.TrimSpace(h), " ")
	if key := strings.TrimSpace(credentials); strings.EqualFold(scheme, "Bearer") && key != "" {
		return key, nil
	}
	msg := "the Authorization header has no scheme"
	if credentials != "" {
		// Only the scheme is named: whatever follows may be a secret.
		msg = "the Authorization header's scheme is not Bearer"
	} else if strings.EqualFold(scheme, "Bearer") {
		msg = "the Authorization header names the Bearer scheme but no key"
	}
	return "", &apiError{Status: http.StatusUnauthorized, Code: "invalid_authorization", Message: msg,
		Hint: "send the key as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')"}
}

// requireScope admits a request whose key has the scope. Without a key, only client
// requests pass, as the public tenant, unless client keys are required.
func (s *Server) requireScope(need apikeys.Scope) gin.HandlerFunc {
	return func(c *gin.Context) {
		presented, malformed := presentedKey(c.Request)
		if malformed != nil {
			c.Header("WWW-Authenticate", `Bearer realm="sluice", error="invalid_request"`)
			writeError(c, malformed)
			return
		}
		if presented == "" {
			if need == apikeys.ScopeClient && !s.cfg.RequireClientKey {
				c.Set(principalKey, anonymous)
				c.Next()
				return
			}
			c.Header("WWW-Authenticate", `Bearer realm="sluice"`)
			writeError(c, &apiError{Status: http.StatusUnauthorized, Code: "key_required",
				Message: "this endpoint needs an API key with " + string(need) + " scope",
				Hint:    "send it as 'Authorization: Bearer <key>'; an operator creates keys with POST /api/v1/admin/keys"})
			return
		}
		key, err := s.cfg.Keys.Check(c.Request.Context(), presented)
		if errors.Is(err, apikeys.ErrInvalidKey) {
			c.Header("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
			writeError(c, &apiError{Status: http.StatusUnauthorized, Code: "invalid_key",
				Message: "the API key is not valid (unknown, revoked or mistyped)", Hint: "ask an operator for a new key"})
			return
		}
		if err != nil {
			writeError(c, toAPIError(err))
			return
		}
		if !key.Scope.Allows(need) {
			writeError(c, &apiError{Status: http.StatusForbidden, Code: "wrong_scope",
				Message: "this API key has " + string(key.Scope) + " scope; this endpoint needs " + string(need),
				Hint:    "use a key with the right scope"})
			return
		}
		c.Set(principalKey, key)
		c.Next()
	}
}

func principal(c *gin.Context) apikeys.Key {
	if v, ok := c.Get(principalKey); ok {
		return v.(apikeys.Key)
	}
	return anonymous
}
