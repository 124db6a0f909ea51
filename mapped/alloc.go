package mapped

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"unsafe"
)

// Handle names a place in a segment the same way in every process: the
// offset of a block's first byte, tagged with bits of the segment's
// creation UUID so that a handle from another segment is refused. The zero
// Handle is never valid.
type Handle uint64

const (
	handleOffBits = 40 // offsets below 1 TiB (MaxMaxSize)
	handleOffMask = 1<<handleOffBits - 1
)

// String is the handle in decimal, for a command line or a file.
func (h Handle) String() string { return strconv.FormatUint(uint64(h), 10) }

// Offset is the byte offset the handle names.
func (h Handle) Offset() int64 { return int64(h & handleOffMask) }

// ParseHandle parses a handle written by Handle.String.
func ParseHandle(s string) (Handle, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("mapstore: parse handle %q: not a handle: %w", s, ErrInvalidHandle)
	}
	return Handle(v), nil
}

func checkSize(n int) error {
	if n <= 0 || uint64(n) > MaxMaxSize {
		return fmt.Errorf("size %d: %w", n, ErrInvalidSize)
	}
	return nil
}

// Allocate allocates a block of n bytes, aligned to 16 bytes, and returns
// it as a slice of length n (its capacity is the block's usable size). An
// allocation that does not fit grows the segment in place, unless it was
// created WithFixedSize; then, or past the maximum size, it is ErrNoSpace.
// The block's memory is not cleared when it is reused.
func (s *Segment) Allocate(n int) ([]byte, error) {
	if err := checkSize(n); err != nil {
		return nil, s.errf("allocate", err)
	}
	if n <= maxSmall && s.mags != nil {
		off, usable, ok := s.cacheAlloc(n)
		if !ok {
			var err error
			if off, usable, err = s.allocCachedSlow(n); err != nil {
				return nil, s.errf(fmt.Sprintf("allocate %d bytes", n), err)
			}
		}
		return s.slice(off, n, usable), nil
	}
	if err := s.lockOnly("allocate"); err != nil {
		return nil, err
	}
	if n <= maxSmall {
		if off, usable, ok := s.h.allocFast(uint64(n), 0, 0); ok {
			s.lk.unlock()
			return s.slice(off, n, usable), nil
		}
	}
	var off, usable uint64
	err := s.runJournaled(opAllocate, func() (err error) {
		off, usable, err = s.h.alloc(uint64(n), 0)
		return err
	})
	if isNoSpace(err) && s.emptyCaches() {
		return s.Allocate(n)
	}
	if err != nil {
		return nil, s.errf(fmt.Sprintf("allocate %d bytes", n), err)
	}
	return s.slice(off, n, usable), nil
}

// AllocateAligned is Allocate with the block's address a multiple of
// align: a power of two up to the page size (4096), or a multiple of the
// page size. Alignment beyond a page holds for the address in this
// process (other processes may map the segment at addresses aligned
// differently); up to a page it holds everywhere.
func (s *Segment) AllocateAligned(n, align int) ([]byte, error) {
	if err := checkSize(n); err != nil {
		return nil, s.errf("allocate", err)
	}
	if align <= 0 || (align <= pageSize && align&(align-1) != 0) || (align > pageSize && align%pageSize != 0) || int64(align) > MaxMaxSize {
		return nil, fmt.Errorf("mapstore: allocate %s: alignment %d is not a power of two up to %d or a multiple of it: %w", s.b.Name(), align, pageSize, ErrInvalidSize)
	}
	var off, usable uint64
	err := s.journaled("allocate", opAllocate, func() (err error) {
		off, usable, err = s.h.alloc(uint64(n), uint64(align))
		return err
	})
	if err != nil {
		return nil, s.errf(fmt.Sprintf("allocate %d bytes aligned to %d", n, align), err)
	}
	return s.slice(off, n, usable), nil
}

func (s *Segment) slice(off uint64, n int, usable uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(s.h.base, off)), usable)[:n:usable]
}

// offsetOf is the offset of b's first byte, if it lies in the segment.
func (s *Segment) offsetOf(b []byte) (uint64, bool) {
	if cap(b) == 0 {
		return 0, false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	base := uintptr(s.h.base)
	if p < base || p-base >= uintptr(s.h.max) {
		return 0, false // outside the mapping; inside it, the callers check the size
	}
	return uint64(p - base), true
}

// Deallocate frees the block b (as Allocate or Block returned it; only its
// first byte matters). Memory outside the segment, inside a block, or a
// block already freed is ErrInvalidHandle, and nothing changes.
func (s *Segment) Deallocate(b []byte) error {
	off, ok := s.offsetOf(b)
	if !ok {
		return fmt.Errorf("mapstore: deallocate %s: memory at %p is not in the segment: %w", s.b.Name(), unsafe.SliceData(b), ErrInvalidHandle)
	}
	return s.deallocateAt(off)
}

func (s *Segment) deallocateAt(off uint64) error {
	if s.mags != nil {
		switch s.cacheFree(off) {
		case cachePushed:
			return nil
		case cacheSlow:
			return s.freeCachedSlow(off)
		}
		if off >= s.known.Load() {
			// Maybe a cell past the size this process last saw (another
			// grew the segment): look again, under the lock.
			return s.freeCachedSlow(off)
		}
	}
	if err := s.lockOnly("deallocate"); err != nil {
		return err
	}
	if s.h.freeFast(off, 0, 0) {
		s.lk.unlock()
		return nil
	}
	if err := s.runJournaled(opDeallocate, func() error { return s.h.freeAt(off) }); err != nil {
		return s.errf("deallocate", err)
	}
	return nil
}

// Handle returns the handle of b's first byte, which must lie in the
// segment (it need not start a block; Block only accepts those that do).
func (s *Segment) Handle(b []byte) (Handle, error) {
	if st := s.state.Load(); st&stClosed != 0 {
		return 0, s.stateErr("handle", st)
	}
	off, ok := s.offsetOf(b)
	if !ok {
		return 0, fmt.Errorf("mapstore: handle %s: memory at %p is not in the segment: %w", s.b.Name(), unsafe.SliceData(b), ErrInvalidHandle)
	}
	return s.handle(off), nil
}

func (s *Segment) handle(off uint64) Handle { return Handle(s.tag<<handleOffBits | off) }

// resolve checks that h belongs to this segment and lies inside it.
func (s *Segment) resolve(h Handle) (uint64, error) {
	if uint64(h)>>handleOffBits != s.tag {
		return 0, fmt.Errorf("handle %d belongs to another segment: %w", h, ErrInvalidHandle)
	}
	off := uint64(h) & handleOffMask
	if off >= uint64(s.env.Size()) {
		return 0, fmt.Errorf("handle %d: offset %d is beyond the segment's size %d: %w", h, off, s.env.Size(), ErrInvalidHandle)
	}
	return off, nil
}

// Block returns the live block that starts at h, with its usable length.
// A handle from another segment, beyond the size, inside a block or of a
// freed block is ErrInvalidHandle.
func (s *Segment) Block(h Handle) ([]byte, error) {
	var off, size uint64
	err := s.read("block", func() (err error) {
		if off, err = s.resolve(h); err == nil {
			size, err = s.h.blockSize(off)
		}
		if err == nil && size <= maxSmall && s.h.marked(off) && s.h.cachedAt(off) {
			err = fmt.Errorf("handle %d: the block at offset %d is free (in a block cache): %w", h, off, ErrInvalidHandle)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.slice(off, int(size), size), nil
}

// At returns n bytes at h, which must lie inside the segment (not
// necessarily at a block's start).
func (s *Segment) At(h Handle, n int) ([]byte, error) {
	if st := s.state.Load(); st&stClosed != 0 {
		return nil, s.stateErr("at", st)
	}
	off, err := s.resolve(h)
	if err != nil {
		return nil, s.errf("at", err)
	}
	if n < 0 || uint64(n) > uint64(s.env.Size())-off {
		return nil, s.errf("at", fmt.Errorf("%d bytes at offset %d run past the segment's size %d: %w", n, off, s.env.Size(), ErrInvalidHandle))
	}
	return unsafe.Slice((*byte)(unsafe.Add(s.env.Base(), off)), n), nil
}

// AllocateInto allocates n bytes and stores the new block's handle in the
// 8-byte word at ref (a handle of memory in the segment, 8-byte aligned),
// as one crash-atomic step: after a crash either the block is allocated
// and ref holds its handle, or neither happened. Use it to link a block
// into a structure in the segment without a window in which a crash leaks
// it.
func (s *Segment) AllocateInto(ref Handle, n int) ([]byte, error) {
	if err := checkSize(n); err != nil {
		return nil, s.errf("allocate", err)
	}
	if st := s.state.Load(); st&stRefusesChanges != 0 {
		return nil, s.stateErr("allocate", st)
	}
	roff, err := s.refWord(ref)
	if err != nil {
		return nil, s.errf("allocate into", err)
	}
	if err := s.lockOnly("allocate"); err != nil {
		return nil, err
	}
	if n <= maxSmall {
		if off, usable, ok := s.h.allocFast(uint64(n), uintptr(roff), s.tag<<handleOffBits); ok {
			s.lk.unlock()
			return s.slice(off, n, usable), nil
		}
	}
	var off, usable uint64
	err = s.runJournaled(opAllocate, func() (err error) {
		if off, usable, err = s.h.alloc(uint64(n), 0); err == nil {
			s.h.set(uintptr(roff), uint64(s.handle(off)))
		}
		return err
	})
	if isNoSpace(err) && s.emptyCaches() {
		return s.AllocateInto(ref, n)
	}
	if err != nil {
		return nil, s.errf(fmt.Sprintf("allocate %d bytes", n), err)
	}
	return s.slice(off, n, usable), nil
}

// DeallocateFrom frees the block whose handle is stored at ref and sets
// the word at ref to zero, as one crash-atomic step.
func (s *Segment) DeallocateFrom(ref Handle) error {
	if st := s.state.Load(); st&stRefusesChanges != 0 {
		return s.stateErr("deallocate", st)
	}
	roff, err := s.refWord(ref)
	if err != nil {
		return s.errf("deallocate from", err)
	}
	if err := s.lockOnly("deallocate"); err != nil {
		return err
	}
	var off uint64
	off, err = s.resolve(Handle(atomic.LoadUint64((*uint64)(unsafe.Add(s.h.base, roff)))))
	if err == nil && s.h.freeFast(off, uintptr(roff), 0) {
		s.lk.unlock()
		return nil
	}
	if err != nil {
		s.lk.unlock()
		return s.errf("deallocate from", err)
	}
	err = s.runJournaled(opDeallocate, func() error {
		if err := s.h.freeAt(off); err != nil {
			return err
		}
		s.h.set(uintptr(roff), 0)
		return nil
	})
	if err != nil {
		return s.errf("deallocate from", err)
	}
	return nil
}

func (s *Segment) refWord(ref Handle) (uint64, error) {
	off, err := s.resolve(ref)
	if err != nil {
		return 0, err
	}
	if off%8 != 0 || off+8 > uint64(s.env.Size()) || off < s.h.geo.lo {
		return 0, fmt.Errorf("reference at offset %d is not an 8-byte aligned word of the segment's data: %w", off, ErrInvalidHandle)
	}
	return off, nil
}

// FreeMemory is the number of bytes not in live blocks: the capacity of
// the segment's pages minus the usable size of every live block (what
// Block reports). The allocator's own tables are not counted. Like Boost's
// get_free_memory it is a sum, not the largest block that would fit.
func (s *Segment) FreeMemory() int64 {
	var v int64
	err := s.read("free memory", func() error {
		cached, err := s.h.cachedBytes()
		v = int64(s.h.get(mCapacity) - s.h.get(mInUse) + cached)
		return err
	})
	if err != nil {
		return 0
	}
	return v
}

// AllMemoryDeallocated reports whether the segment holds no live block.
// Named objects count as blocks, and so does the name directory's index
// while it holds a name (it is freed with the last one).
func (s *Segment) AllMemoryDeallocated() bool {
	inUse := uint64(1)
	err := s.read("check memory", func() error {
		cached, err := s.h.cachedBytes()
		inUse = s.h.get(mInUse) - cached
		return err
	})
	return err == nil && inUse == 0
}

// Expand grows the block that starts at p in place so that it holds at
// least n bytes, when the pages after it are free (or it ends the
// segment's memory and the segment may grow), as one crash-atomic step.
// It returns the block's usable size after: at least n when it grew (or
// was already that large), its old size when it could not, in which case
// nothing changed and the caller allocates a new block instead. Memory
// not at the start of a live block is ErrInvalidHandle.
func (s *Segment) Expand(p unsafe.Pointer, n int) (int, error) {
	if err := checkSize(n); err != nil {
		return 0, s.errf("expand", err)
	}
	off, ok := s.offsetOf(unsafe.Slice((*byte)(p), 1))
	if !ok {
		return 0, fmt.Errorf("mapstore: expand %s: memory at %p is not in the segment: %w", s.b.Name(), p, ErrInvalidHandle)
	}
	var usable uint64
	err := s.journaled("expand", opAllocate, func() (err error) {
		usable, _, err = s.h.extend(off, uint64(n))
		return err
	})
	if err != nil {
		return 0, s.errf("expand", err)
	}
	return int(usable), nil
}
