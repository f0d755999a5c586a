package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

func (s *Server) routeAdmin(api *gin.RouterGroup) {
	admin := api.Group("/admin", s.requireScope(apikeys.ScopeOperator))
	admin.POST("/keys", s.createKey)
	admin.GET("/keys", s.listKeys)
	admin.DELETE("/keys/:id", s.revokeKey)
	admin.GET("/limits", s.getLimits)
	admin.PUT("/limits", s.putLimits)
	admin.POST("/pause", s.setPaused(true))
	admin.POST("/resume", s.setPaused(false))
	admin.GET("/stats", s.stats)
	admin.GET("/workers", s.listNodes)
	admin.GET("/history", s.history) // dashboard.go
}

// bindStrict decodes a JSON body, refusing unknown fields so that typos are not
// silently ignored.
func bindStrict(c *gin.Context, v any) bool {
	dec := json.NewDecoder(c.Request.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if isBodyTimeout(err) {
			c.Error(bodyError(err))
			return false
		}
		c.Error(badRequest("invalid_body", "the body is not valid: "+err.Error(), "see the admin API in README.md"))
		return false
	}
	return true
}

type createKeyRequest struct {
	Scope  apikeys.Scope `json:"scope"`
	Tenant string        `json:"tenant"`
	Name   string        `json:"name"`
}

func (s *Server) createKey(c *gin.Context) {
	var req createKeyRequest
	if !bindStrict(c, &req) {
		return
	}
	if req.Tenant == "" {
		req.Tenant = publicTenant
	}
	if err := admission.ValidateTenant(req.Tenant); err != nil {
		c.Error(badRequest("invalid_tenant", err.Error(), "tenants are short lowercase names like acme or ci-bots"))
		return
	}
	if !req.Scope.Valid() {
		c.Error(badRequest("invalid_scope", "scope must be client, publisher or operator",
			"client keys take tickets, publisher keys publish releases, operator keys use the admin API"))
		return
	}
	k, secret, err := s.cfg.Keys.Create(c.Request.Context(), req.Scope, req.Tenant, req.Name)
	if errors.Is(err, apikeys.ErrInvalidRequest) {
		c.Error(badRequest("invalid_key_request", err.Error(),
			fmt.Sprintf("a key's name is a note for people, at most %d characters of text", apikeys.MaxNameLen)))
		return
	}
	if err != nil {
		c.Error(err)
		return
	}
	s.log.Info("API key created", "key_id", k.ID, "scope", k.Scope, "tenant", k.Tenant, "by", principal(c).ID)
	c.JSON(http.StatusCreated, gin.H{"id": k.ID, "key": secret, "scope": k.Scope, "tenant": k.Tenant,
		"name": k.Name, "created_at": k.Created, "note": "the key is shown only now; store it safely"})
}

func (s *Server) listKeys(c *gin.Context) {
	keys, err := s.cfg.Keys.List(c.Request.Context())
	if err != nil {
		c.Error(err)
		return
	}
	if keys == nil {
		keys = []apikeys.Key{}
	}
	c.JSON(http.StatusOK, gin.H{"keys": keys})
}

func (s *Server) revokeKey(c *gin.Context) {
	err := s.cfg.Keys.Revoke(c.Request.Context(), c.Param("id"))
	if errors.Is(err, apikeys.ErrNotFound) {
		c.Error(&apiError{Status: http.StatusNotFound, Code: "key_not_found", Message: "no API key with that id", Hint: "GET /api/v1/admin/keys lists them"})
		return
	}
	if err != nil {
		c.Error(err)
		return
	}
	s.log.Info("API key revoked", "key_id", c.Param("id"), "by", principal(c).ID)
	c.Status(http.StatusNoContent)
}

func (s *Server) getLimits(c *gin.Context) {
	l, err := s.cfg.Ledger.Limits(c.Request.Context())
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, wireLimits(l))
}

func (s *Server) putLimits(c *gin.Context) {
	var u api.LimitsUpdate
	if !bindStrict(c, &u) {
		return
	}
	l, err := s.cfg.Ledger.SetLimits(c.Request.Context(), ledgerLimitsUpdate(u))
	if errors.Is(err, admission.ErrInvalidLimits) {
		c.Error(badRequest("invalid_limits", err.Error(), "nothing was changed"))
		return
	}
	if err != nil {
		c.Error(err)
		return
	}
	s.log.Info("limits changed", "global", l.Global, "tenant_default", l.TenantDefault, "by", principal(c).ID)
	c.JSON(http.StatusOK, wireLimits(l))
}

// wireLimits is the limits in force as the API shows them: the one conversion from
// the ledger's to the wire.
func wireLimits(l admission.Limits) api.Limits {
	out := api.Limits{Global: l.Global, TenantDefault: l.TenantDefault, Paused: l.Paused}
	if l.Tenants != nil {
		out.Tenants = make(map[string]api.TenantLimits, len(l.Tenants))
		for name, t := range l.Tenants {
			out.Tenants[name] = api.TenantLimits{Limit: t.Limit, Weight: t.Weight, RateBps: t.RateBps}
		}
	}
	return out
}

// ledgerLimitsUpdate is an update as the API received it, for the ledger: the one
// conversion from the wire to the ledger's.
func ledgerLimitsUpdate(u api.LimitsUpdate) admission.LimitsUpdate {
	out := admission.LimitsUpdate{Global: u.Global, TenantDefault: u.TenantDefault}
	if u.Tenants != nil {
		out.Tenants = make(map[string]admission.TenantLimits, len(u.Tenants))
		for name, t := range u.Tenants {
			out.Tenants[name] = admission.TenantLimits{Limit: t.Limit, Weight: t.Weight, RateBps: t.RateBps}
		}
	}
	return out
}

func (s *Server) setPaused(paused bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := s.cfg.Ledger.SetPaused(c.Request.Context(), paused); err != nil {
			c.Error(err)
			return
		}
		s.log.Info("admission paused state changed", "paused", paused, "by", principal(c).ID)
		c.JSON(http.StatusOK, gin.H{"paused": paused})
	}
}

func (s *Server) stats(c *gin.Context) {
	st, err := s.cfg.Ledger.SharedStats(c.Request.Context())
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, s.wireStats(c.Request.Context(), st))
}
