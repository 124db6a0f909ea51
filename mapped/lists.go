package mapped

// Page lists. The free spans of each bin and the runs of each size class
// that have a free cell form doubly linked lists through word 1 of their
// first page's descriptor (previous page, next page; 0 ends a list, as
// page 0 is never in one). A word of the manager area holds each list's
// first page.
//
// The links are read from the segment: push and unlink check each one
// (below the managed pages, and pointing back) before they follow it,
// and record a bad one with fail instead of writing through it.

// push makes page p the first page of the list whose head word is at head.
func (h *heap) push(head uintptr, p uint64) {
	old := h.get(head)
	if old >= h.managed() || old == p {
		h.fail("the list whose head is at offset %d starts at page %d, pushing page %d (%d pages managed)", head, old, p, h.managed())
		return
	}
	h.set(h.desc(p)+8, mkLinks(0, old))
	if old != 0 {
		od := h.desc(old) + 8
		h.set(od, mkLinks(p, lNext(h.get(od))))
	}
	h.set(head, p)
}

// unlink takes page p out of the list whose head word is at head. p's own
// links are left as they were.
func (h *heap) unlink(head uintptr, p uint64) {
	l := h.get(h.desc(p) + 8)
	prev, next := lPrev(l), lNext(l)
	managed := h.managed()
	var pd, nd uintptr
	switch {
	case prev >= managed || next >= managed:
		h.fail("page %d links to pages %d and %d, beyond the %d managed", p, prev, next, managed)
		return
	case prev == 0 && h.get(head) != p:
		h.fail("page %d has no previous page, yet the list at offset %d starts at page %d", p, head, h.get(head))
		return
	case prev != 0:
		if pd = h.desc(prev) + 8; lNext(h.get(pd)) != p {
			h.fail("page %d says page %d comes before it, which says page %d comes next", p, prev, lNext(h.get(pd)))
			return
		}
	}
	if next != 0 {
		if nd = h.desc(next) + 8; lPrev(h.get(nd)) != p {
			h.fail("page %d says page %d comes after it, which says page %d comes before", p, next, lPrev(h.get(nd)))
			return
		}
	}
	if prev != 0 {
		h.set(pd, mkLinks(lPrev(h.get(pd)), next))
	} else {
		h.set(head, next)
	}
	if next != 0 {
		h.set(nd, mkLinks(prev, lNext(h.get(nd))))
	}
}
