package mapped

import (
	"slices"
	"sync"
	"sync/atomic"
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

// prefaultRange is a range to fault in: n bytes at offset off; with a
// progress word (its offset, 0: none), the writer is at origin +
// *progress × unit. A fresh range (freshPages') is a guess: it waits
// behind the ranges a caller asked for, and yields to one that arrives
// while it runs.
type prefaultRange struct {
	off, n, progress, origin, unit uint64
	fresh                          bool
}

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
	s.queuePrefault(prefaultRange{off: off, n: uint64(n)})
}

// PrefaultAhead is Prefault for a block that a writer fills in order
// while the prefault runs, as a vector's appends do: the block starts at
// block, the writer is *progress × unit bytes into it (progress is a word
// in this segment, such as the vector's length), and the pages from there
// to end bytes into the block are faulted in. The prefault keeps ahead of
// the writer: what the writer has reached is skipped, and when the writer
// catches up (no idle core to run the prefault on) it jumps half a
// megabyte past it, so that the two never fault the same pages at once
// and wait on each other's page locks. (Faulting alongside the writer made
// appends to a file slower than no prefault at all: 5.4-6.8 ns against
// 4.2-4.4, with the other core busy.)
func (s *Segment) PrefaultAhead(block unsafe.Pointer, end int, progress *uint64, unit int) {
	if end < prefaultMin || unit <= 0 || !s.CanChange() {
		return
	}
	origin, ok := s.offsetOf(unsafe.Slice((*byte)(block), 1))
	pw, ok2 := s.offsetOf(unsafe.Slice((*byte)(unsafe.Pointer(progress)), 8))
	if !ok || !ok2 || pw%8 != 0 || origin+uint64(end) > s.known.Load() && origin+uint64(end) > uint64(s.sizeNow()) {
		return
	}
	from := atomic.LoadUint64(progress)
	if from >= uint64(end)/uint64(unit) {
		return
	}
	off := origin + from*uint64(unit)
	n := origin + uint64(end) - off
	if n < prefaultMin {
		return
	}
	s.queuePrefault(prefaultRange{off: off, n: n, progress: pw, origin: origin, unit: uint64(unit)})
}

func (s *Segment) queuePrefault(r prefaultRange) {
	pf := &s.prefault
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if len(pf.pending) >= 8 {
		pf.pending = pf.pending[1:] // the oldest is the most likely written already
	}
	pf.push(r)
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
			if r.progress != 0 {
				// The writer's position, from the segment: a bad value only
				// makes this skip or stop (it is a hint).
				w := atomic.LoadUint64(s.h.w(uintptr(r.progress)))
				if w > (end-r.origin)/r.unit {
					break // past the end: nothing left to do
				}
				if pos := r.origin + w*r.unit; pos+prefaultChunk/4 > at {
					at = (pos + prefaultChunk/2 + pageSize - 1) &^ (pageSize - 1)
					if at >= end {
						break
					}
				}
			}
			if r.fresh && pf.asked() {
				// A caller's range first; the rest of this guess after it.
				pf.mu.Lock()
				pf.push(prefaultRange{off: at, n: end - at, fresh: true})
				pf.mu.Unlock()
				break
			}
			l := min(prefaultChunk, end-at)
			if err := unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(s.h.base, at)), l), madvPopulateWrite); err != nil {
				break // an old kernel (EINVAL), or the range went away
			}
		}
	}
}

// prefaultWindow is how far past the end of the pages this open has
// taken from the page heap the prefaulter keeps pages faulted in.
const prefaultWindow = 8 << 20

// freshPages is told, under the segment lock, the end offset of pages
// just taken from the page heap. Pages past the furthest such end this
// open has seen are likely never written yet, and the next ones taken:
// their faults cost each writer about 2 µs a page (a structure growing
// into fresh memory spends a fifth of its time in them), so the
// prefaulter takes them ahead, a megabyte or more at a time, up to
// prefaultWindow past that end and within the segment's size.
func (s *Segment) freshPages(end uint64) {
	if end <= s.freshEnd.Load() {
		return
	}
	s.freshEnd.Store(end)
	from := max(s.freshAhead.Load(), end)
	to := min(end+prefaultWindow, s.known.Load())
	if to < from+prefaultMin {
		return
	}
	s.freshAhead.Store(to)
	s.queuePrefault(prefaultRange{off: from, n: to - from, fresh: true})
}

// push queues r: a range asked for goes before every fresh one, a fresh
// one last. Called with mu held.
func (pf *prefaulter) push(r prefaultRange) {
	i := len(pf.pending)
	for !r.fresh && i > 0 && pf.pending[i-1].fresh {
		i--
	}
	pf.pending = slices.Insert(pf.pending, i, r)
}

// asked reports whether a range that a caller asked for is waiting.
func (pf *prefaulter) asked() bool {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	return len(pf.pending) > 0 && !pf.pending[0].fresh
}

// prefaulting reports whether the goroutine is at work (for tests).
func (s *Segment) prefaulting() bool {
	s.prefault.mu.Lock()
	defer s.prefault.mu.Unlock()
	return s.prefault.running
}
