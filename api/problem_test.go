package api

import (
	"encoding/json"
	"testing"
)

// Extensions are members of the same object, and never replace a standard member.
func TestProblemExtensions(t *testing.T) {
	p := NewProblem(503, "release_queue_full", "the release queue is full", "send it again", "/api/v1/releases")
	p.Extensions = map[string]any{"accepted": 3, "code": "overridden"}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got["accepted"] != float64(3) || got["code"] != "release_queue_full" ||
		got["type"] != ProblemTypeBase+"release_queue_full" || got["title"] != "Service Unavailable" || got["error"] != got["detail"] {
		t.Errorf("body %s", raw)
	}
	var back Problem
	if err := json.Unmarshal(raw, &back); err != nil || back.ErrorCode() != "release_queue_full" || back.Message() != "the release queue is full" {
		t.Errorf("decoded %+v %v", back, err)
	}
}

// A body with problem details alone (a proxy, another server) still yields a code
// from its type and a message from its detail or title.
func TestProblemWithoutSluiceMembers(t *testing.T) {
	var p Problem
	if err := json.Unmarshal([]byte(`{"type":"`+ProblemTypeBase+`queue_full","title":"Service Unavailable"}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.ErrorCode() != "queue_full" || p.Message() != "Service Unavailable" {
		t.Errorf("code %q message %q", p.ErrorCode(), p.Message())
	}
	if (Problem{Type: "about:blank"}).ErrorCode() != "" {
		t.Error("a foreign type URI gave a code")
	}
}
