package mapped

import "fmt"

// alloc allocates n bytes at the alignment (0 or a power of two up to a
// page, or a multiple of the page size); it returns the offset and the
// usable size.
func (h *heap) alloc(n, align uint64) (uint64, uint64, error) {
	if n <= maxSmall {
		c := int(classOf[(n+15)>>4])
		for align > classes[c].align {
			if c++; c == len(classes) {
				break
			}
		}
		if c < len(classes) {
			off, err := h.allocSmall(c)
			return off, classes[c].size, err
		}
	}
	return h.allocLarge(n, align)
}

// blockRef is a live block as blockAt found it: its first page, that
// page's descriptor (offset and first word), and for a small block its
// cell.
type blockRef struct {
	page uint64
	d    uintptr
	w0   uint64
	cell uint64
}

// blockPages is how many pages the block whose first page's descriptor
// word is w0 covers (0 if w0 starts no block).
func blockPages(w0 uint64) uint64 {
	switch dKind(w0) {
	case kLarge:
		return dPages(w0)
	case kRun:
		if g := geomOf(w0); g != nil {
			return g.pages
		}
	}
	return 0
}

// size is the block's usable size.
func (b blockRef) size() uint64 {
	if dKind(b.w0) == kLarge {
		return dPages(b.w0) * pageSize
	}
	return classes[dClass(b.w0)].size
}

// blockAt finds the live block that starts at off, or says why off is
// not the start of one.
func (h *heap) blockAt(off uint64) (blockRef, error) {
	if off < h.geo.lo || off >= h.get(mManaged)<<pageShift {
		return blockRef{}, fmt.Errorf("offset %d is outside the managed memory: %w", off, ErrInvalidHandle)
	}
	page := off >> pageShift
	d := h.desc(page)
	w0 := h.get(d)
	if dKind(w0) == kCont {
		// Continues the block at the head page it names, which must lie
		// before it and reach it.
		head := dPages(w0)
		if head >= page {
			return blockRef{}, corrupt("page %d continues a block at page %d, which is not before it", page, head)
		}
		d = h.desc(head)
		w0 = h.get(d)
		if span := blockPages(w0); page-head >= span {
			// A continuation left inside a free span by a block since freed
			// (those descriptors mean nothing): off is in no live block.
			return blockRef{}, fmt.Errorf("offset %d is not in a live block: %w", off, ErrInvalidHandle)
		}
		page = head
	}
	switch dKind(w0) {
	case kLarge:
		if off != page<<pageShift {
			return blockRef{}, fmt.Errorf("offset %d is inside the %d-page block at %d, not at its start: %w", off, dPages(w0), page<<pageShift, ErrInvalidHandle)
		}
		if n := dPages(w0); n == 0 || n > h.managed()-page {
			return blockRef{}, corrupt("block at page %d has %d pages, past the %d managed", page, n, h.managed())
		}
		return blockRef{page: page, d: d, w0: w0}, nil
	case kRun:
		cl := geomOf(w0)
		if cl == nil {
			return blockRef{}, fmt.Errorf("offset %d: run at page %d has size class %d and %d pages: %w", off, page, dClass(w0), dPages(w0), ErrCorrupt)
		}
		rel := off - page<<pageShift
		cell, ok := cl.cellOf(rel)
		if !ok {
			if rel >= cl.pages*pageSize {
				return blockRef{}, fmt.Errorf("offset %d is not in a live block: %w", off, ErrInvalidHandle)
			}
			return blockRef{}, fmt.Errorf("offset %d is not at the start of a %d-byte block: %w", off, cl.size, ErrInvalidHandle)
		}
		if h.get(uintptr(page<<pageShift+cell/64*8))&(1<<(cell%64)) == 0 {
			return blockRef{}, fmt.Errorf("offset %d is a free %d-byte block (freed already?): %w", off, cl.size, ErrInvalidHandle)
		}
		return blockRef{page: page, d: d, w0: w0, cell: cell}, nil
	}
	return blockRef{}, fmt.Errorf("offset %d is not in a live block: %w", off, ErrInvalidHandle)
}

// blockSize is the usable size of the live block at off, or an error that
// says why off is not the start of one.
func (h *heap) blockSize(off uint64) (uint64, error) {
	b, err := h.blockAt(off)
	if err != nil {
		return 0, err
	}
	return b.size(), nil
}

// freeAt frees the live block at off, or says why off is not one (and
// changes nothing).
func (h *heap) freeAt(off uint64) error {
	b, err := h.blockAt(off)
	if err != nil {
		return err
	}
	if dKind(b.w0) == kLarge {
		n := dPages(b.w0)
		h.add(mInUse, -n*pageSize)
		h.pageFree(b.page, n)
		return nil
	}
	if h.marked(off) && h.cachedAt(off) {
		return fmt.Errorf("the block at offset %d is already free (in a block cache): %w", off, ErrInvalidHandle)
	}
	wo := uintptr(b.page<<pageShift + b.cell/64*8)
	h.set(wo, h.get(wo)&^(1<<(b.cell%64)))
	h.freeCell(b.page, b.d, b.w0, dClass(b.w0))
	return nil
}

// extend grows the large block at off in place to at least n bytes by
// taking the free pages that follow it; a block that ends where the
// managed pages end grows the segment first (unless it is fixed). It
// returns the block's usable size after, and false (nothing changed)
// when the pages after it are not free.
func (h *heap) extend(off, n uint64) (uint64, bool, error) {
	b, err := h.blockAt(off)
	if err != nil {
		return 0, false, err
	}
	if dKind(b.w0) != kLarge {
		if h.marked(off) && h.cachedAt(off) {
			return 0, false, fmt.Errorf("the block at offset %d is free (in a block cache): %w", off, ErrInvalidHandle)
		}
		return b.size(), b.size() >= n, nil
	}
	have := dPages(b.w0)
	want := (n + pageSize - 1) >> pageShift
	if want <= have {
		return have * pageSize, true, nil
	}
	if want > uint64(h.max)>>pageShift {
		return have * pageSize, false, nil
	}
	q, need := b.page+have, want-have
	for tries := 0; ; tries++ {
		managed := h.managed()
		if q == managed && tries == 0 && !h.fixed {
			if err := h.growBy(need); err != nil {
				return have * pageSize, false, nil // no room to grow: the caller moves the block
			}
			continue
		}
		if q >= managed {
			return have * pageSize, false, nil
		}
		w := h.get(h.desc(q))
		if dKind(w) != kFree {
			return have * pageSize, false, nil
		}
		span := dPages(w)
		if span == 0 || span > managed-q {
			h.fail("free span at page %d has %d pages, past the %d managed", q, span, managed)
			return have * pageSize, false, nil
		}
		if span < need {
			return have * pageSize, false, nil
		}
		h.spanRemove(q, span)
		if span > need {
			h.spanInsert(q+need, span-need)
		}
		c := mkDesc(kCont, 0, 0, b.page)
		h.set(h.desc(q), c)
		for p := q + 1; p < q+need-1; p++ {
			*h.w(h.desc(p)) = c // inside the old free span: meant nothing
		}
		if need > 1 {
			h.set(h.desc(q+need-1), c)
		}
		h.set(b.d, mkDesc(kLarge, 0, 0, want))
		h.add(mInUse, need*pageSize)
		return want * pageSize, true, nil
	}
}
