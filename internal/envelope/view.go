package envelope

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// view is the envelope's pages as one mapping shows them (the open's
// whole mapping), or as a copy read from the backing (the head that the
// last Close checks once the mapping is retired).
type view []byte

func (v view) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&v[off])) }

func (v view) word32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&v[off])) }

// header decodes the trusted header. The meta lock (or exclusive ownership
// during Open) must be held, so that no write is in flight.
func (v view) header(name string) (Header, error) {
	h, _, err := ReadHeaders(v[:PageSize])
	if err != nil {
		// Only this package writes headers, under the meta lock, and always
		// to the copy not trusted: something else wrote over both.
		return h, fmt.Errorf("%s: header damaged while open: %w", name, err)
	}
	return h, nil
}

// writeHeader writes h with the next generation into the copy that does
// not hold the current one, so a torn write leaves the other intact.
// It returns the offset of the copy written.
func (v view) writeHeader(h *Header) int {
	h.Generation++
	off := HeaderOffA
	if h.Generation%2 == 1 {
		off = HeaderOffB
	}
	buf := make([]byte, HeaderLen)
	h.Encode(buf)
	copy(v[off:off+HeaderLen], buf)
	return off
}

// liveSize is the live-size word: the header's size, for one atomic load.
func (v view) liveSize() uint64 { return atomic.LoadUint64(v.word(liveSizeOff)) }

func (v view) setLiveSize(n uint64) { atomic.StoreUint64(v.word(liveSizeOff), n) }

// current decodes the trusted header from the mapping.
func (e *Envelope) current() (Header, error) { return e.mem.header(e.region.Name()) }

// writeHeader writes h through the mapping (see view.writeHeader).
func (e *Envelope) writeHeader(h *Header) {
	if e.access == ReadOnly {
		panic("mapstore: header write through a read-only mapping")
	}
	e.mem.writeHeader(h)
}
