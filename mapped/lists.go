package mapped

// Page lists. The free spans of each bin and the runs of each size class
// that have a free cell form doubly linked lists through word 1 of their
// first page's descriptor (previous page, next page; 0 ends a list, as
// page 0 is never in one). A word of the manager area holds each list's
// first page.

// push makes page p the first page of the list whose head word is at head.
func (h *heap) push(head uintptr, p uint64) {
	old := h.get(head)
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
	if prev != 0 {
		pd := h.desc(prev) + 8
		h.set(pd, mkLinks(lPrev(h.get(pd)), next))
	} else {
		h.set(head, next)
	}
	if next != 0 {
		nd := h.desc(next) + 8
		h.set(nd, mkLinks(prev, lNext(h.get(nd))))
	}
}
