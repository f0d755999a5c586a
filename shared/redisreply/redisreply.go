// Package redisreply decodes the replies of sluice's Lua scripts and hashes: nested
// arrays of integers and strings, and field/value lists. A reply of the wrong shape
// (too short, an element of another type, a number that does not parse) is an error
// naming where it went wrong, never a zero value or a panic: a script and the Go code
// reading it can drift apart, and that must show up as a failure, not as a ticket at
// position 0.
//
// A Decoder is sticky, like bufio.Scanner: each accessor returns the zero value once
// something was wrong, and Err reports the first problem. So a call site reads every
// element it needs and checks one error at the end.
package redisreply

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrShape: a reply did not have the shape its reader expects.
var ErrShape = errors.New("unexpected reply shape")

// Decoder holds the first shape error of one reply and everything read from it.
type Decoder struct {
	what string
	err  error
}

// New starts decoding the reply of what (a script or command name, for errors).
func New(what string) *Decoder { return &Decoder{what: what} }

// Err is the first shape error met, wrapping ErrShape; nil if there was none.
func (d *Decoder) Err() error { return d.err }

func (d *Decoder) fail(path, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%s reply%s: %s (%w)", d.what, path, fmt.Sprintf(format, args...), ErrShape)
	}
}

// Array reads v as an array reply of at least min elements.
func (d *Decoder) Array(v any, min int) Array {
	return d.array("", v, min)
}

func (d *Decoder) array(path string, v any, min int) Array {
	vals, ok := v.([]any)
	if !ok {
		d.fail(path, "want an array, got %s", typeName(v))
		return Array{d: d, path: path}
	}
	if len(vals) < min {
		d.fail(path, "want at least %d elements, got %d", min, len(vals))
		return Array{d: d, path: path}
	}
	return Array{d: d, path: path, vals: vals}
}

// Hash reads m (an HGETALL answer) as a hash.
func (d *Decoder) Hash(m map[string]string) Hash { return Hash{d: d, m: m} }

// Int reads v as an integer reply (a Redis integer, or a string of one).
func (d *Decoder) Int(v any) int64 { return d.integer("", v) }

// OneOf reads v as a status reply that must be one of words ("OK", "NOGEN", ...): a
// script that answers a word its reader does not know has drifted from it.
func (d *Decoder) OneOf(v any, words ...string) string {
	return d.oneOf("", v, words)
}

// Either reads a reply that takes one of two shapes: a string (one of words, when
// words are given), returned as word; or an array of at least min elements, returned
// as arr with word "". Anything else is a shape error.
func (d *Decoder) Either(v any, min int, words ...string) (word string, arr Array) {
	if _, isArray := v.([]any); isArray {
		return "", d.array("", v, min)
	}
	if _, isString := v.(string); !isString {
		d.fail("", "want a string or an array, got %s", typeName(v))
		return "", Array{d: d}
	}
	return d.oneOf("", v, words), Array{d: d}
}

func (d *Decoder) oneOf(path string, v any, words []string) string {
	s, isString := v.(string)
	if !isString {
		d.fail(path, "want one of %s, got %s", strings.Join(words, ", "), typeName(v))
		return ""
	}
	if len(words) > 0 && !slices.Contains(words, s) {
		d.fail(path, "want one of %s, got %q", strings.Join(words, ", "), s)
		return ""
	}
	return s
}

// Entry reads the fields of the stream entry id (an XRANGE or XREAD answer's
// Values) as a hash. Values may be strings or integers.
func (d *Decoder) Entry(id string, values map[string]any) Hash {
	path := "[" + id + "]"
	m := make(map[string]string, len(values))
	for k, v := range values {
		switch x := v.(type) {
		case string:
			m[k] = x
		case int64:
			m[k] = strconv.FormatInt(x, 10)
		default:
			d.fail(path+"."+k, "want a string or an integer, got %s", typeName(v))
		}
	}
	return Hash{d: d, path: path, m: m}
}

// StreamID reads id as a stream entry id ("ms-seq"); 0, 0 when it is not one.
func (d *Decoder) StreamID(id string) (ms, seq uint64) {
	ms, seq, err := ParseStreamID(id)
	if err != nil {
		d.fail("", "%v", err)
	}
	return ms, seq
}

// ParseStreamID splits a stream entry id, "ms-seq"; "ms" alone has seq 0, as Redis
// reads it in a range.
func ParseStreamID(id string) (ms, seq uint64, err error) {
	m, s, hasSeq := strings.Cut(id, "-")
	ms, err = strconv.ParseUint(m, 10, 64)
	if err == nil && hasSeq {
		seq, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("want a stream id (ms-seq), got %q", id)
	}
	return ms, seq, nil
}

// Array is an array reply; after a shape error it is empty.
type Array struct {
	d    *Decoder
	path string
	vals []any
}

// Len is the number of elements.
func (a Array) Len() int { return len(a.vals) }

func (a Array) at(i int) (any, string, bool) {
	path := fmt.Sprintf("%s[%d]", a.path, i)
	if i < 0 || i >= len(a.vals) {
		a.d.fail(path, "missing (the array has %d elements)", len(a.vals))
		return nil, path, false
	}
	return a.vals[i], path, true
}

// Int reads element i as an integer (a Redis integer, or a string of one).
func (a Array) Int(i int) int64 {
	v, path, ok := a.at(i)
	if !ok {
		return 0
	}
	return a.d.integer(path, v)
}

// Float reads element i as a number (a Redis integer, or a string of a number: Lua
// floats reach Redis as strings, tostring(x)).
func (a Array) Float(i int) float64 {
	v, path, ok := a.at(i)
	if !ok {
		return 0
	}
	switch x := v.(type) {
	case int64:
		return float64(x)
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			a.d.fail(path, "want a number, got %q", x)
		}
		return f
	}
	a.d.fail(path, "want a number, got %s", typeName(v))
	return 0
}

// String reads element i as a string.
func (a Array) String(i int) string {
	v, path, ok := a.at(i)
	if !ok {
		return ""
	}
	s, isString := v.(string)
	if !isString {
		a.d.fail(path, "want a string, got %s", typeName(v))
	}
	return s
}

// OneOf reads element i as a string that must be one of words.
func (a Array) OneOf(i int, words ...string) string {
	v, path, ok := a.at(i)
	if !ok {
		return ""
	}
	return a.d.oneOf(path, v, words)
}

// Records reads the array as a flat list of records of width elements each (admit's
// { id, epoch, ..., id, epoch, ... }) and returns how many there are. Elements left
// over after the last whole record are a shape error, not a record dropped unread.
func (a Array) Records(width int) int {
	if width <= 0 || len(a.vals)%width != 0 {
		a.d.fail(a.path, "want records of %d elements, got %d elements", width, len(a.vals))
		return 0
	}
	return len(a.vals) / width
}

// Array reads element i as an array of at least min elements.
func (a Array) Array(i, min int) Array {
	v, path, ok := a.at(i)
	if !ok {
		return Array{d: a.d, path: path}
	}
	return a.d.array(path, v, min)
}

// Pairs reads element i as a flat field/value list (HGETALL inside a script, or one
// built as { k1, v1, k2, v2, ... }). Values may be strings or integers.
func (a Array) Pairs(i int) Hash {
	arr := a.Array(i, 0)
	if len(arr.vals)%2 != 0 {
		a.d.fail(arr.path, "want field/value pairs, got %d elements", len(arr.vals))
		return Hash{d: a.d, path: arr.path}
	}
	m := make(map[string]string, len(arr.vals)/2)
	for j := 0; j < len(arr.vals); j += 2 {
		k := arr.String(j)
		v, path, _ := arr.at(j + 1)
		switch x := v.(type) {
		case string:
			m[k] = x
		case int64:
			m[k] = strconv.FormatInt(x, 10)
		default:
			a.d.fail(path, "want a string or an integer, got %s", typeName(v))
		}
	}
	return Hash{d: a.d, path: arr.path, m: m}
}

// Hash is a Redis hash: fields that may be absent. An absent (or empty) field reads
// as the zero value; a present one of the wrong form is a shape error.
type Hash struct {
	d    *Decoder
	path string
	m    map[string]string
}

// Len is the number of fields.
func (h Hash) Len() int { return len(h.m) }

// Fields returns the fields as they are, for callers that range over them.
func (h Hash) Fields() map[string]string { return h.m }

// String reads field k; "" when absent.
func (h Hash) String(k string) string { return h.m[k] }

// Int reads field k as an integer; 0 when absent.
func (h Hash) Int(k string) int64 {
	v := h.m[k]
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		h.d.fail(h.path+"."+k, "want an integer, got %q", v)
	}
	return n
}

// Float reads field k as a number; 0 when absent.
func (h Hash) Float(k string) float64 {
	v := h.m[k]
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		h.d.fail(h.path+"."+k, "want a number, got %q", v)
	}
	return f
}

// Required reads field k, which must be present and not empty.
func (h Hash) Required(k string) string {
	v := h.m[k]
	if v == "" {
		h.d.fail(h.path+"."+k, "missing")
	}
	return v
}

func (d *Decoder) integer(path string, v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			d.fail(path, "want an integer, got %q", x)
		}
		return n
	}
	d.fail(path, "want an integer, got %s", typeName(v))
	return 0
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case []any:
		return "an array"
	case string:
		return "a string"
	case int64:
		return "an integer"
	}
	return fmt.Sprintf("%T", v)
}
