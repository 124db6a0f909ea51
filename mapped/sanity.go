package mapped

import (
	"fmt"
	"math/bits"
)

// CheckSanity walks every structure of the allocator and the name
// directory and returns a description of the first inconsistency (wrapping
// ErrCorrupt), or nil. It takes the segment lock, so it sees no operation
// half done; its cost is proportional to the segment's size.
func (s *Segment) CheckSanity() error {
	if s.closed.Load() {
		return s.errClosed("check")
	}
	var err error
	s.lockR(func() { err = s.h.checkSanity(s.env.Size()) })
	if err != nil {
		return fmt.Errorf("mapstore: check %s: %w", s.b.Name(), err)
	}
	return nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrCorrupt)...)
}

// checkSanity is CheckSanity with the lock held (or nobody else writing).
func (h *heap) checkSanity(size int64) error {
	if err := h.validate(size); err != nil {
		return err
	}
	if op, n := h.j.Pending(); op != 0 {
		return corrupt("undo journal holds an unfinished operation %d (%d words)", op, n)
	}
	if h.fastPending() {
		return corrupt("fast-path intent record holds an unfinished operation (%#x)", h.get(mFast))
	}
	managed := h.get(mManaged)
	var metaPages, inUse uint64
	free := map[uint64]uint64{}             // free span head -> pages
	partial := map[uint64]int{}             // non-full run -> class
	blockOf := func(q, head uint64) error { // continuation pages
		w := h.get(h.desc(q))
		if dKind(w) != kCont || dPages(w) != head {
			return corrupt("page %d should continue the block at page %d, its descriptor says kind %d head %d", q, head, dKind(w), dPages(w))
		}
		return nil
	}
	for p := uint64(0); p < managed; {
		w := h.get(h.desc(p))
		switch dKind(w) {
		case kMeta:
			metaPages++
			p++
		case kFree:
			n := dPages(w)
			if n == 0 || p+n > managed {
				return corrupt("free span at page %d has %d pages, past the %d managed", p, n, managed)
			}
			if n > 1 {
				if t := h.get(h.desc(p + n - 1)); dKind(t) != kFreeTail || dPages(t) != n {
					return corrupt("free span at page %d (%d pages) has a bad tail descriptor (kind %d, %d pages)", p, n, dKind(t), dPages(t))
				}
			}
			for q := p + 1; q < p+n; q++ {
				if k := dKind(h.get(h.desc(q))); k == kRun || k == kLarge {
					return corrupt("page %d inside the free span at page %d is marked as a block start", q, p)
				}
			}
			free[p] = n
			p += n
		case kLarge:
			n := dPages(w)
			if n == 0 || p+n > managed {
				return corrupt("block at page %d has %d pages, past the %d managed", p, n, managed)
			}
			for q := p + 1; q < p+n; q++ {
				if err := blockOf(q, p); err != nil {
					return err
				}
			}
			inUse += n * pageSize
			p += n
		case kRun:
			c := dClass(w)
			if c >= uint64(len(classes)) {
				return corrupt("run at page %d has size class %d", p, c)
			}
			cl := &classes[c]
			if dPages(w) != cl.pages || p+cl.pages > managed {
				return corrupt("run at page %d of %d-byte slots has %d pages, want %d", p, cl.size, dPages(w), cl.pages)
			}
			for q := p + 1; q < p+cl.pages; q++ {
				if err := blockOf(q, p); err != nil {
					return err
				}
			}
			var n uint64
			for i := uint64(0); i < cl.words; i++ {
				bm := h.get(uintptr(p<<pageShift + i*8))
				if i == cl.words-1 {
					if extra := cl.words*64 - cl.nslots; extra > 0 {
						hi := ^uint64(0) << (64 - extra)
						if bm&hi != hi {
							return corrupt("run at page %d: bitmap bits past its %d slots are clear", p, cl.nslots)
						}
						bm &^= hi
					}
				}
				n += uint64(bits.OnesCount64(bm))
			}
			if n != dLive(w) {
				return corrupt("run at page %d of %d-byte slots: bitmap has %d live slots, descriptor says %d", p, cl.size, n, dLive(w))
			}
			if n < cl.nslots {
				partial[p] = int(c)
			}
			inUse += n * cl.size
			p += cl.pages
		default:
			return corrupt("page %d: descriptor kind %d where a block or free span should start", p, dKind(w))
		}
	}
	if c := h.get(mCapacity); c != (managed-metaPages)*pageSize {
		return corrupt("capacity says %d bytes, the pages give %d", c, (managed-metaPages)*pageSize)
	}
	if u := h.get(mInUse); u != inUse {
		return corrupt("in-use counter says %d bytes, the live blocks hold %d", u, inUse)
	}
	// Free-span bins: every free span in the bin of its size, once.
	mask := h.get(mBinMask)
	for b := uint64(0); b < numBins; b++ {
		head := h.get(mBins + uintptr(b)*8)
		if (head != 0) != (mask&(1<<b) != 0) {
			return corrupt("free-span bin %d: head %d but mask bit %v", b, head, mask&(1<<b) != 0)
		}
		prev := uint64(0)
		for q := head; q != 0; {
			n, ok := free[q]
			if !ok {
				return corrupt("free-span bin %d lists page %d, which is not a free span (or is listed twice)", b, q)
			}
			if binOf(n) != b {
				return corrupt("free span at page %d (%d pages) is in bin %d", q, n, b)
			}
			l := h.get(h.desc(q) + 8)
			if lPrev(l) != prev {
				return corrupt("free span at page %d: back link %d, want %d", q, lPrev(l), prev)
			}
			delete(free, q)
			prev, q = q, lNext(l)
		}
	}
	for p := range free {
		return corrupt("free span at page %d (%d pages) is in no bin", p, free[p])
	}
	// Partial-run lists: every run with a free slot in its class's list, once.
	for c := range classes {
		prev := uint64(0)
		for q := h.get(mClasses + uintptr(c)*8); q != 0; {
			pc, ok := partial[q]
			if !ok {
				return corrupt("size class %d lists page %d, which is not a run with a free slot (or is listed twice)", classes[c].size, q)
			}
			if pc != c {
				return corrupt("run at page %d of class %d is listed under class %d", q, classes[pc].size, classes[c].size)
			}
			l := h.get(h.desc(q) + 8)
			if lPrev(l) != prev {
				return corrupt("run at page %d: back link %d, want %d", q, lPrev(l), prev)
			}
			delete(partial, q)
			prev, q = q, lNext(l)
		}
	}
	for p := range partial {
		return corrupt("run at page %d has free slots and is in no list", p)
	}
	return h.checkDirectory()
}
