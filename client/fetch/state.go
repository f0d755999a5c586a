package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// stateVersion is bumped when the state file's meaning changes; other versions are
// not trusted (the download starts over).
const stateVersion = 1

// span is the half-open byte range [Start, End).
type span struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

func (s span) len() int64 { return s.End - s.Start }

// state is what the state file next to the partial file records: which bytes of which
// version of the object are already in it.
type state struct {
	Version int    `json:"version"`
	Object  string `json:"object,omitempty"`
	Size    int64  `json:"size"`
	ETag    string `json:"etag"`
	Done    []span `json:"done"`
}

// StatePath is where the state of a partial file is kept.
func StatePath(part string) string { return part + ".json" }

// loadState reads the state of part; a missing or unreadable state is nil.
func loadState(part string) (*state, error) {
	raw, err := os.ReadFile(StatePath(part))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read download state: %w", err)
	}
	var st state
	if json.Unmarshal(raw, &st) != nil || st.Version != stateVersion {
		return nil, nil
	}
	st.Done = merge(st.Done)
	for _, s := range st.Done {
		if s.Start < 0 || s.End > st.Size || s.Start >= s.End {
			return nil, nil
		}
	}
	return &st, nil
}

// saveState replaces the state file atomically (write, fsync, rename), so a crash
// leaves either the old state or the new one.
func saveState(part string, st *state) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	path := StatePath(part)
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write download state: %w", err)
	}
	_, werr := tmp.Write(raw)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write download state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write download state: %w", err)
	}
	return nil
}

// RemoveState deletes a partial file and its state.
func RemoveState(part string) error {
	err := os.Remove(StatePath(part))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	perr := os.Remove(part)
	if errors.Is(perr, fs.ErrNotExist) {
		perr = nil
	}
	return errors.Join(err, perr)
}

// merge sorts spans and joins those that touch or overlap.
func merge(in []span) []span {
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int { return int(min(max(a.Start-b.Start, -1), 1)) })
	var out []span
	for _, x := range s {
		if x.len() <= 0 {
			continue
		}
		if n := len(out); n > 0 && x.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}

// missing returns the parts of [0, size) not covered by done (merged).
func missing(done []span, size int64) []span {
	var out []span
	at := int64(0)
	for _, d := range done {
		if d.Start > at {
			out = append(out, span{at, d.Start})
		}
		at = max(at, d.End)
	}
	if at < size {
		out = append(out, span{at, size})
	}
	return out
}

func total(spans []span) int64 {
	var n int64
	for _, s := range spans {
		n += s.len()
	}
	return n
}
