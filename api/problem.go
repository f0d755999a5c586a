package api

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
)

// ProblemContentType is RFC 9457's media type of error answers.
const ProblemContentType = "application/problem+json"

// ProblemTypeBase is where each error code's problem type lives: the type of an
// answer with code "object_not_found" is ProblemTypeBase + "object_not_found".
const ProblemTypeBase = "https://sluice.dev/problems/"

// Problem is a refusal as RFC 9457 problem details: the standard members, code and
// hint as extension members, and error (the same text as detail) for clients written
// before problem details.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
	Code     string `json:"code"`
	Error    string `json:"error"`
	Hint     string `json:"hint,omitempty"`
	// Extensions are more members of the body (for example the counts of a partly
	// stored batch); they never replace a member above. Not decoded.
	Extensions map[string]any `json:"-"`
}

// NewProblem is the problem of status with a stable code, the message saying what
// happened and the hint saying what to do, for the request path instance.
func NewProblem(status int, code, message, hint, instance string) Problem {
	return Problem{
		Type: ProblemTypeBase + code, Title: http.StatusText(status), Status: status,
		Detail: message, Instance: instance, Code: code, Error: message, Hint: hint,
	}
}

// MarshalJSON writes the members and the extensions in one object.
func (p Problem) MarshalJSON() ([]byte, error) {
	type members Problem // without this method
	if len(p.Extensions) == 0 {
		return json.Marshal(members(p))
	}
	raw, err := json.Marshal(members(p))
	if err != nil {
		return nil, err
	}
	body := maps.Clone(p.Extensions)
	var std map[string]any
	if err := json.Unmarshal(raw, &std); err != nil {
		return nil, err
	}
	maps.Copy(body, std)
	return json.Marshal(body)
}

// Message is what happened, for a person: error, else detail, else title (a server or
// proxy that sends plain problem details has no error member).
func (p Problem) Message() string { return cmp.Or(p.Error, p.Detail, p.Title) }

// ErrorCode is sluice's stable code: code, else the last segment of a type under
// ProblemTypeBase, else "".
func (p Problem) ErrorCode() string {
	if p.Code != "" {
		return p.Code
	}
	if code, ok := strings.CutPrefix(p.Type, ProblemTypeBase); ok {
		return code
	}
	return ""
}
