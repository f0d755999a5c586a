package signer

import (
	"io"
	"os"
)

// One open per file per connection. A local object's file (objstore.LocalReader) that
// a response opened stays open on its slotHold, so the connection's later ranges of
// the same object seek in it instead of opening it again; it is closed with the hold.
// Every request still checks the object's current version (Edge.stat) against the
// token before it is served, and a local ETag names the file's inode, size and
// modification time: the kept file is the one a fresh open would give.

// localFile is what objstore.LocalReader offers besides its section.
type localFile interface {
	fileSection
	File() *os.File
}

// keptSection is a section of a hold's kept file; Close gives the file back.
type keptSection struct {
	h       *slotHold
	section io.LimitedReader
}

func (k *keptSection) Read(p []byte) (int, error) { return k.section.Read(p) }
func (k *keptSection) Section() *io.LimitedReader { return &k.section }

func (k *keptSection) Close() error {
	h := k.h
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fileBusy = false
	if h.released && h.file != nil {
		err := h.file.Close()
		h.file = nil
		return err
	}
	return nil
}

// takeFile returns length bytes from start of h's kept file, or nil when h keeps
// none that is free.
func (h *slotHold) takeFile(start, length int64) io.ReadCloser {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file == nil || h.fileBusy || h.released {
		return nil
	}
	if _, err := h.file.Seek(start, io.SeekStart); err != nil {
		h.file.Close()
		h.file = nil
		return nil
	}
	h.fileBusy = true
	return &keptSection{h: h, section: io.LimitedReader{R: h.file, N: length}}
}

// keep makes rd's file h's kept file when rd is a local section and h keeps none yet.
func (h *slotHold) keep(rd io.ReadCloser) io.ReadCloser {
	lf, ok := rd.(localFile)
	if !ok || h.conn == nil {
		return rd
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file != nil || h.released {
		return rd
	}
	h.file, h.fileBusy = lf.File(), true
	return &keptSection{h: h, section: *lf.Section()}
}
