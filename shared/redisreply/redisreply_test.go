package redisreply

import (
	"errors"
	"strings"
	"testing"
)

// A poll-shaped reply: { fields, position, count, span, NOW, eta, known, paused }.
func pollReply() []any {
	return []any{
		[]any{"id", "t1", "size", "42", "conns", int64(2)},
		int64(3), int64(10), int64(60000), int64(1), int64(1500), int64(1), int64(0),
	}
}

func TestDecodesAWellFormedReply(t *testing.T) {
	d := New("poll")
	r := d.Array(pollReply(), 7)
	h := r.Pairs(0)
	if got := h.String("id"); got != "t1" {
		t.Errorf("id = %q, want t1", got)
	}
	if got := h.Int("size"); got != 42 {
		t.Errorf("size = %d, want 42", got)
	}
	if got := h.Int("conns"); got != 2 {
		t.Errorf("conns (an integer value) = %d, want 2", got)
	}
	if got := h.Int("absent"); got != 0 {
		t.Errorf("an absent field = %d, want 0", got)
	}
	if got := r.Int(1); got != 3 {
		t.Errorf("position = %d, want 3", got)
	}
	if got := r.Float(5); got != 1500 {
		t.Errorf("eta as a float = %v, want 1500", got)
	}
	if err := d.Err(); err != nil {
		t.Fatalf("a well-formed reply: %v", err)
	}
}

func TestRefusesWrongShapes(t *testing.T) {
	cases := []struct {
		name string
		read func(d *Decoder)
		want string // in the error, where it went wrong
	}{
		{"not an array", func(d *Decoder) { d.Array("OK", 0) }, "want an array, got a string"},
		{"a short reply", func(d *Decoder) { d.Array(pollReply()[:3], 7) }, "want at least 7 elements, got 3"},
		{"an index past the end", func(d *Decoder) { d.Array([]any{int64(1)}, 0).Int(4) }, "poll reply[4]: missing"},
		{"a string for an integer", func(d *Decoder) { d.Array([]any{"x"}, 1).Int(0) }, `[0]: want an integer, got "x"`},
		{"an array for an integer", func(d *Decoder) { d.Array([]any{[]any{}}, 1).Int(0) }, "[0]: want an integer, got an array"},
		{"an integer for a string", func(d *Decoder) { d.Array([]any{int64(7)}, 1).String(0) }, "[0]: want a string, got an integer"},
		{"nil for a number", func(d *Decoder) { d.Array([]any{nil}, 1).Float(0) }, "[0]: want a number, got nil"},
		{"a word for a number", func(d *Decoder) { d.Array([]any{"heavy"}, 1).Float(0) }, `want a number, got "heavy"`},
		{"a nested array too short", func(d *Decoder) { d.Array([]any{[]any{"acme"}}, 1).Array(0, 5) }, "[0]: want at least 5 elements, got 1"},
		{"odd field/value list", func(d *Decoder) { d.Array([]any{[]any{"id"}}, 1).Pairs(0) }, "[0]: want field/value pairs, got 1 elements"},
		{"a field name that is no string", func(d *Decoder) { d.Array([]any{[]any{int64(1), "x"}}, 1).Pairs(0) }, "[0][0]: want a string"},
		{"a field that does not parse", func(d *Decoder) {
			d.Array([]any{[]any{"size", "12kB"}}, 1).Pairs(0).Int("size")
		}, `[0].size: want an integer, got "12kB"`},
		{"a hash field that does not parse", func(d *Decoder) {
			d.Hash(map[string]string{"size": "-"}).Int("size")
		}, `.size: want an integer, got "-"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := New("poll")
			c.read(d)
			err := d.Err()
			if !errors.Is(err, ErrShape) {
				t.Fatalf("err = %v, want ErrShape", err)
			}
			if !strings.HasPrefix(err.Error(), "poll reply") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %q, want it to name the reply and say %q", err, c.want)
			}
		})
	}
}

// After a wrong shape every accessor answers its zero value and the first error is
// kept, so a reader can go on without checking each element (and without panicking).
func TestTheFirstErrorSticks(t *testing.T) {
	d := New("stats")
	r := d.Array([]any{int64(1)}, 6) // short: everything after reads as zero
	if r.Int(0) != 0 || r.String(3) != "" || r.Array(5, 0).Len() != 0 || r.Pairs(6).Int("x") != 0 {
		t.Error("a reply refused for its shape still answered values")
	}
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "want at least 6 elements, got 1") {
		t.Errorf("err = %v, want the first problem (too short)", err)
	}
}
