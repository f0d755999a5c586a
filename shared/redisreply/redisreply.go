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
	"strconv"
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
