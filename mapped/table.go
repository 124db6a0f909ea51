package mapped

import (
	"errors"
	"fmt"
	"unsafe"
)

// The descriptor table grows with the segment. Pages beyond the managed
// ones join the page heap when the segment grows (incorporate); when the
// table cannot describe them, a larger table is built in the new pages,
// published with one word, and the old table's pages are freed.

// growBy grows the segment so that at least n more contiguous pages are
// free, and brings the new pages under the page heap.
func (h *heap) growBy(n uint64) error {
	if h.fixed {
		return fmt.Errorf("%d more pages needed and the segment has a fixed size: %w", n, ErrNoSpace)
	}
	cur := uint64(h.size())
	managed := h.get(mManaged)
	want := managed + n + 1
	if tcap := h.get(mTableCap); want > tcap {
		want += (want*descLen+pageSize-1)/pageSize + 1 // room for a bigger table
	}
	need := want << pageShift
	newSize := max(need, cur+min(cur, 1<<30)) // double, by at most 1 GiB
	newSize = min(newSize, uint64(h.max))
	if newSize < need {
		return fmt.Errorf("%d more pages needed, past the maximum size %d: %w", n, h.max, ErrNoSpace)
	}
	got, err := h.grow(int64(newSize))
	if errors.Is(err, ErrNoSpace) && newSize > need {
		// The disk or tmpfs has no room to double: grow by what is needed.
		got, err = h.grow(int64(need))
	}
	if err != nil {
		return err
	}
	h.incorporate(uint64(got) >> pageShift)
	return nil
}

// incorporate brings pages [managed, pages) under the page heap, moving
// the descriptor table when it is too small. The old table is copied to
// fresh pages and only then published, so a rollback finds it untouched.
func (h *heap) incorporate(pages uint64) {
	managed := h.get(mManaged)
	if pages <= managed {
		return
	}
	tcap := h.get(mTableCap)
	if pages <= tcap {
		h.set(mManaged, pages)
		h.add(mCapacity, (pages-managed)*pageSize)
		h.pageFree(managed, pages-managed)
		return
	}
	ncap := (pages + 255) &^ 255
	ntp := ncap * descLen / pageSize
	if managed+ntp >= pages {
		return // not enough new room for the table: wait for more growth
	}
	old := h.get(mTable)
	otp := tcap * descLen / pageSize
	nt := managed << pageShift
	dst := unsafe.Slice((*byte)(unsafe.Add(h.base, nt)), ntp*pageSize)
	n := copy(dst, unsafe.Slice((*byte)(unsafe.Add(h.base, old)), managed*descLen))
	clear(dst[n:])
	for p := managed; p < managed+ntp; p++ {
		*h.w(uintptr(nt + p*descLen)) = mkDesc(kMeta, 0, 0, 1)
	}
	h.set(mTable, nt)
	h.set(mTableCap, ncap)
	h.set(mManaged, pages)
	free := pages - managed - ntp
	h.add(mCapacity, (free+otp)*pageSize)
	h.pageFree(managed+ntp, free)
	// The old table's descriptors say kMeta; inside a free span that means
	// nothing, and pageFree rewrites the span's first and last.
	if old >= h.geo.lo {
		h.pageFree(old>>pageShift, otp)
	} // else the first table of a small segment, in the manager area: it stays
}
