package mapped

import (
	"fmt"
	"math/bits"
)

// The page heap: whole pages, for large blocks and for the runs that small
// blocks are cut from. Free pages form spans; a span's first and last
// descriptors carry its length, and the span sits in the bin of its
// length (binOf) so that a search starts at spans large enough.

func binOf(n uint64) uint64 { return min(n, numBins) - 1 }

func binHead(b uint64) uintptr { return mBins + uintptr(b)*8 }

// spanInsert makes pages [p, p+n) a free span and puts it in its bin.
func (h *heap) spanInsert(p, n uint64) {
	b := binOf(n)
	h.set(h.desc(p), mkDesc(kFree, 0, 0, n))
	if n > 1 {
		h.set(h.desc(p+n-1), mkDesc(kFreeTail, 0, 0, n))
	}
	h.push(binHead(b), p)
	if m := h.get(mBinMask); m&(1<<b) == 0 {
		h.set(mBinMask, m|1<<b)
	}
}

// spanRemove takes the free span at p (n pages) out of its bin.
func (h *heap) spanRemove(p, n uint64) {
	b := binOf(n)
	h.unlink(binHead(b), p)
	if h.get(binHead(b)) == 0 {
		h.set(mBinMask, h.get(mBinMask)&^(1<<b))
	}
}

// alignFit returns the first page q >= p with q's address a multiple of
// alignBytes (0: any), or false if [q, q+n) does not fit in [p, p+size).
func (h *heap) alignFit(p, size, n, alignBytes uint64) (uint64, bool) {
	q := p
	if alignBytes > pageSize {
		addr := uint64(uintptr(h.base)) + p<<pageShift
		q = p + ((alignBytes-addr%alignBytes)%alignBytes)>>pageShift
	}
	return q, q+n <= p+size
}

// findSpan finds a free span that can hold n pages at the alignment.
// A bin list that leaves the managed pages, names a page that is not a
// free span of the bin's sizes, or does not end within as many steps as
// there are pages, is corrupt.
func (h *heap) findSpan(n, alignBytes uint64) (p, size, q uint64, ok bool) {
	b := binOf(n)
	managed := h.managed()
	mask := h.get(mBinMask) >> b << b
	for mask != 0 {
		bb := uint64(bits.TrailingZeros64(mask))
		mask &^= 1 << bb
		steps := uint64(0)
		for s := h.get(binHead(bb)); s != 0; s = lNext(h.get(h.desc(s) + 8)) {
			if steps++; s >= managed || steps > managed {
				h.fail("free-span bin %d leads to page %d after %d steps (%d pages managed)", bb, s, steps, managed)
				return 0, 0, 0, false
			}
			w := h.get(h.desc(s))
			sz := dPages(w)
			if dKind(w) != kFree || sz == 0 || sz > managed-s || binOf(sz) != bb {
				h.fail("free-span bin %d lists page %d, whose descriptor (kind %d, %d pages) is not a free span of the bin's sizes", bb, s, dKind(w), sz)
				return 0, 0, 0, false
			}
			if sz < n {
				continue
			}
			if q, ok := h.alignFit(s, sz, n, alignBytes); ok {
				return s, sz, q, true
			}
			if alignBytes <= pageSize && bb < numBins-1 {
				break
			}
		}
	}
	return 0, 0, 0, false
}

// pageAlloc takes n pages (address aligned to alignBytes when that is
// more than a page) from the page heap, growing the segment if it may.
// It returns the first page; the caller writes the descriptors.
func (h *heap) pageAlloc(n, alignBytes uint64) (uint64, error) {
	for tries := 0; ; tries++ {
		if p, size, q, ok := h.findSpan(n, alignBytes); ok {
			h.spanRemove(p, size)
			if q > p {
				h.spanInsert(p, q-p)
			}
			if end := p + size; q+n < end {
				h.spanInsert(q+n, end-q-n)
			}
			if h.fresh != nil {
				h.fresh((q + n) << pageShift)
			}
			return q, nil
		}
		if h.releaseEmptyRun() {
			// An empty run kept as its class's current one: first those,
			// before the segment grows.
			tries--
			continue
		}
		if tries == 2 {
			return 0, fmt.Errorf("no free run of %d pages: %w", n, ErrNoSpace)
		}
		extra := n
		if alignBytes > pageSize {
			extra += alignBytes >> pageShift
		}
		if err := h.growBy(extra); err != nil {
			return 0, err
		}
	}
}

// pageFree returns pages [p, p+n) to the page heap, merging them with free
// neighbours (whose descriptors are checked before they are trusted).
func (h *heap) pageFree(p, n uint64) {
	start, cnt := p, n
	managed := h.managed()
	if p > 0 {
		l := h.get(h.desc(p - 1))
		switch {
		case dKind(l) == kFree && dPages(l) == 1:
			h.spanRemove(p-1, 1)
			start, cnt = p-1, cnt+1
		case dKind(l) == kFreeTail:
			ln := dPages(l)
			if ln < 2 || ln > p || h.get(h.desc(p-ln)) != mkDesc(kFree, 0, 0, ln) {
				h.fail("page %d ends a free span of %d pages whose first page does not say so", p-1, ln)
				return
			}
			h.spanRemove(p-ln, ln)
			start, cnt = p-ln, cnt+ln
		}
	}
	if r := p + n; r < managed {
		if rw := h.get(h.desc(r)); dKind(rw) == kFree {
			rn := dPages(rw)
			if rn == 0 || rn > managed-r {
				h.fail("free span at page %d has %d pages, past the %d managed", r, rn, managed)
				return
			}
			h.spanRemove(r, rn)
			h.set(h.desc(r), 0)
			cnt += rn
		}
	}
	if start != p {
		h.set(h.desc(p), 0)
	}
	h.spanInsert(start, cnt)
}

// markCont writes the descriptors of a new block's pages after the first:
// the last one is recorded (it may have been a free span's tail), the ones
// inside are not (inside a free span they mean nothing).
func (h *heap) markCont(p, n uint64) {
	if n < 2 {
		return
	}
	c := mkDesc(kCont, 0, 0, p)
	for q := p + 1; q < p+n-1; q++ {
		*h.w(h.desc(q)) = c
	}
	h.set(h.desc(p+n-1), c)
}

// allocLarge allocates whole pages; it returns the offset and the size.
func (h *heap) allocLarge(n, alignBytes uint64) (uint64, uint64, error) {
	pages := (n + pageSize - 1) >> pageShift
	if pages > uint64(h.max)>>pageShift {
		return 0, 0, fmt.Errorf("%d bytes is more than the maximum size %d: %w", n, h.max, ErrNoSpace)
	}
	p, err := h.pageAlloc(pages, alignBytes)
	if err != nil {
		return 0, 0, err
	}
	d := h.desc(p)
	h.set(d, mkDesc(kLarge, 0, 0, pages))
	h.set(d+8, 0)
	h.markCont(p, pages)
	h.add(mInUse, pages*pageSize)
	return p << pageShift, pages * pageSize, nil
}
