package mapped

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Prefaulting: the first write to each page of a segment takes a page
// fault, which costs about 2 µs on shared memory and 1 µs on a file on
// the machines this was measured on: a vector that grows to 80 MB spends
// most of its appends' time in them. Prefault lets another core take them
// ahead of the writer.

// prefaultMin is the smallest range Prefault takes: below it, the
// goroutine costs more than the faults it saves.
const prefaultMin = 1 << 20

// prefaultChunk is how much one madvise call populates, so that a
// prefault stops soon after Close.
const prefaultChunk = 1 << 20

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14): fault the pages
// in writable, as a write would, without changing their contents.
const madvPopulateWrite = 23

type prefaulter struct {
	mu      sync.Mutex
	running bool
	pending []prefaultRange
}

type prefaultRange struct{ off, n uint64 }

// Prefault starts faulting in, in the background, the pages of the n
// bytes at p (memory of this segment, such as a block just allocated or
// grown, about to be written in order), so that the writes that follow
// do not each wait for a page fault. Their contents do not change. It is
// a hint: ranges under 1 MiB, memory outside the segment, a read-only or
// closed open, and a kernel without MADV_POPULATE_WRITE make it do
// nothing. One goroutine per open works through the ranges asked for, a
// megabyte at a time, and stops at Close. On a file backing the pages
// it faults in are dirty, and written back like pages written.
func (s *Segment) Prefault(p unsafe.Pointer, n int) {
	if n < prefaultMin || !s.CanChange() {
		return
	}
	off, ok := s.offsetOf(unsafe.Slice((*byte)(p), 1))
	if !ok || off+uint64(n) > s.known.Load() && off+uint64(n) > uint64(s.sizeNow()) {
		return
	}
	pf := &s.prefault
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if len(pf.pending) >= 8 {
		pf.pending = pf.pending[1:] // the oldest is the most likely written already
	}
	pf.pending = append(pf.pending, prefaultRange{off, uint64(n)})
	if !pf.running {
		pf.running = true
		go s.prefaultLoop()
	}
}

func (s *Segment) prefaultLoop() {
	pf := &s.prefault
	for {
		pf.mu.Lock()
		if len(pf.pending) == 0 || !s.CanChange() {
			pf.pending = nil
			pf.running = false
			pf.mu.Unlock()
			return
		}
		r := pf.pending[0]
		pf.pending = pf.pending[1:]
		pf.mu.Unlock()
		start := r.off &^ (pageSize - 1)
		end := r.off + r.n
		for at := start; at < end; at += prefaultChunk {
			if !s.CanChange() {
				break // closing: the mapping is about to go
			}
			l := min(prefaultChunk, end-at)
			if err := unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(s.h.base, at)), l), madvPopulateWrite); err != nil {
				break // an old kernel (EINVAL), or the range went away
			}
		}
	}
}

// prefaulting reports whether the goroutine is at work (for tests).
func (s *Segment) prefaulting() bool {
	s.prefault.mu.Lock()
	defer s.prefault.mu.Unlock()
	return s.prefault.running
}
