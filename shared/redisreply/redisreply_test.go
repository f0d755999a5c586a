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
		{"a hash field that is no number", func(d *Decoder) {
			d.Hash(map[string]string{"weight": "heavy"}).Float("weight")
		}, `.weight: want a number, got "heavy"`},
		{"a required field absent", func(d *Decoder) { d.Hash(map[string]string{"x": "1"}).Required("id") }, ".id: missing"},
		{"a required field empty", func(d *Decoder) { d.Hash(map[string]string{"id": ""}).Required("id") }, ".id: missing"},
		{"an integer reply that is an array", func(d *Decoder) { d.Int([]any{int64(1)}) }, "poll reply: want an integer, got an array"},
		{"an unknown word", func(d *Decoder) { d.OneOf("MAYBE", "OK", "NOGEN") }, `want one of OK, NOGEN, got "MAYBE"`},
		{"an integer for a word", func(d *Decoder) { d.OneOf(int64(1), "OK") }, "want one of OK, got an integer"},
		{"nil for a word", func(d *Decoder) { d.OneOf(nil, "OK") }, "want one of OK, got nil"},
		{"an unknown word in an array", func(d *Decoder) { d.Array([]any{"OK", "LOST"}, 2).OneOf(1, "OK", "FENCED") }, `[1]: want one of OK, FENCED, got "LOST"`},
		{"a word past the end", func(d *Decoder) { d.Array([]any{"OK"}, 0).OneOf(1, "OK") }, "[1]: missing"},
		{"either: an integer", func(d *Decoder) { d.Either(int64(3), 5) }, "want a string or an array, got an integer"},
		{"either: an unknown word", func(d *Decoder) { d.Either("gone", 5, "queued", "done") }, `want one of queued, done, got "gone"`},
		{"either: a short array", func(d *Decoder) { d.Either([]any{"created"}, 5, "queued") }, "want at least 5 elements, got 1"},
		{"a partial record", func(d *Decoder) {
			d.Array([]any{"t1", int64(1), "t2"}, 0).Records(2)
		}, "want records of 2 elements, got 3 elements"},
		{"a stream entry value of another type", func(d *Decoder) {
			d.Entry("5-1", map[string]any{"id": []any{"x"}})
		}, "[5-1].id: want a string or an integer, got an array"},
		{"a stream entry without its field", func(d *Decoder) {
			d.Entry("5-1", map[string]any{"other": "x"}).Required("id")
		}, "[5-1].id: missing"},
		{"a stream id that is not one", func(d *Decoder) { d.StreamID("5-x") }, `want a stream id (ms-seq), got "5-x"`},
		{"a stream id without ms", func(d *Decoder) { d.StreamID("-1") }, `want a stream id (ms-seq), got "-1"`},
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

func TestDecodesTheOtherShapes(t *testing.T) {
	d := New("poll")
	if got := d.Int(int64(1)) + d.Int("2"); got != 3 {
		t.Errorf("Int(1) + Int(\"2\") = %d, want 3", got)
	}
	if got := d.OneOf("NOGEN", "OK", "NOGEN"); got != "NOGEN" {
		t.Errorf("OneOf = %q, want NOGEN", got)
	}
	if got := d.Array([]any{"OK", "FENCED"}, 2).OneOf(1, "OK", "FENCED"); got != "FENCED" {
		t.Errorf("Array.OneOf = %q, want FENCED", got)
	}
	if word, arr := d.Either("done", 5, "queued", "done"); word != "done" || arr.Len() != 0 {
		t.Errorf("Either on a word = %q, %d elements; want done and no array", word, arr.Len())
	}
	if word, arr := d.Either(pollReply(), 5); word != "" || arr.Int(1) != 3 {
		t.Errorf("Either on an array = %q, position %d; want no word and position 3", word, arr.Int(1))
	}
	if n := d.Array([]any{"t1", int64(1), "t2", int64(2)}, 0).Records(2); n != 2 {
		t.Errorf("Records = %d, want 2", n)
	}
	if n := d.Array([]any{}, 0).Records(8); n != 0 {
		t.Errorf("Records of nothing = %d, want 0", n)
	}
	h := d.Entry("5-1", map[string]any{"id": "t1", "n": int64(4)})
	if h.Required("id") != "t1" || h.Int("n") != 4 {
		t.Errorf("Entry = %v, want id t1 and n 4", h.Fields())
	}
	if got := d.Hash(map[string]string{"weight": "2.5"}).Float("weight"); got != 2.5 {
		t.Errorf("Hash.Float = %v, want 2.5", got)
	}
	if got := d.Hash(nil).Float("weight"); got != 0 {
		t.Errorf("an absent float field = %v, want 0", got)
	}
	for id, want := range map[string][2]uint64{"0-0": {0, 0}, "1700000000000-7": {1700000000000, 7}, "12": {12, 0}} {
		if ms, seq := d.StreamID(id); ms != want[0] || seq != want[1] {
			t.Errorf("StreamID(%q) = %d, %d; want %d, %d", id, ms, seq, want[0], want[1])
		}
	}
	if err := d.Err(); err != nil {
		t.Fatalf("well-formed replies: %v", err)
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
