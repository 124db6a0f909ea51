package mapped

import (
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
)

// The segment manager's layout. The envelope (internal/envelope) takes the first
// envelope.EnvelopeSize bytes; the manager area follows, then the page
// descriptor table, then pages the allocator hands out.
//
// Manager area (mgrOff, two pages; every field an 8-byte word):
//
//	offset  what
//	0       magic "MSHEAP03" (the format of the manager area, heap and
//	        name directory; "MSHEAP01" and "MSHEAP02" segments are
//	        ErrVersion)
//	8       segment lock (32-bit futex word, see lock.go)
//	16      descriptor table offset
//	24      descriptor table capacity, in pages described
//	32      managed pages: the page heap covers pages [0, managed)
//	40      capacity: bytes of pages that can hold blocks
//	48      in use: the sum of the usable sizes of live blocks
//	56      reserved
//	64      mask of non-empty free-span bins
//	72      name directory: index table offset (0: none yet)
//	80      name directory: index size (64-byte groups, a power of two)
//	88      name directory: names
//	96      name directory: tombstones
//	128     fast-path intent record, 4 words (see fast.go)
//	256     free-span bins: 64 list heads (page index; 0 = empty)
//	768     size classes: 32 partial-run list heads (page index; 0 = empty)
//	4096    undo journal (journal.Journal), 4096 bytes
//
// Page descriptor table: 16 bytes per page, indexed by page number:
//
//	word 0: bits 0-7 kind, 8-15 size class, 16-31 live blocks (runs),
//	        32-63 pages (heads, free tails) or the head page (continuations)
//	word 1: bits 0-31 previous, 32-63 next page in the descriptor's list
//	        (free-span bin or partial-run list)
//
// A small run is 1-8 pages cut into slots of one size class; its first
// bytes are a bitmap of live slots (bits past the last slot are set), the
// slots follow at the class's alignment. A large block is whole pages.
// Free pages form spans whose first and last descriptors carry the span's
// length; the descriptors inside a free span mean nothing, except that none
// of them is a run or large-block head.
const (
	pageSize  = envelope.PageSize
	pageShift = 12

	mgrOff       = envelope.EnvelopeSize
	mgrPages     = 2
	mMagic       = mgrOff + 0
	mLock        = mgrOff + 8
	mTable       = mgrOff + 16
	mTableCap    = mgrOff + 24
	mManaged     = mgrOff + 32
	mCapacity    = mgrOff + 40
	mInUse       = mgrOff + 48
	mBinMask     = mgrOff + 64
	mDirTable    = mgrOff + 72
	mDirCap      = mgrOff + 80
	mDirCount    = mgrOff + 88
	mDirTombs    = mgrOff + 96
	mBins        = mgrOff + 256
	mClasses     = mgrOff + 768
	mJournal     = mgrOff + pageSize
	journalBytes = pageSize
	firstTable   = mgrOff + mgrPages*pageSize // where a new segment's table goes

	numBins  = 64
	descLen  = 16
	mgrMagic = 0x33305041454853_4d // "MSHEAP03" little-endian

	rootManager = 0 // header root slot holding mgrOff
)

// Descriptor kinds.
const (
	kInner    = 0 // inside a free span
	kMeta     = 1 // envelope, manager, descriptor table
	kFree     = 2 // first page of a free span
	kFreeTail = 3 // last page of a free span of two pages or more
	kRun      = 4 // first page of a small run
	kLarge    = 5 // first page of a large block
	kCont     = 6 // other page of a run or large block
)

// Journal operation codes, for the recovery report.
const (
	opAllocate = iota + 1
	opDeallocate
	opGrow
	opInsertName
	opRemoveName
)

var opNames = map[uint64]string{
	opAllocate: "allocation", opDeallocate: "deallocation", opGrow: "growth",
	opInsertName: "named insert", opRemoveName: "named remove",
}

// Size classes: slot sizes for small blocks, and how each run is cut.
const maxSmall = 2048

type sizeClass struct {
	size   uint64 // slot bytes
	pages  uint64 // pages per run
	start  uint64 // offset of slot 0 in the run (after the bitmap)
	nslots uint64
	words  uint64 // bitmap words
	align  uint64 // alignment of every slot
	inv    uint64 // 2^32/size + 1: x*inv>>32 == x/size for x < 2^16
}

var (
	classSize = []uint64{16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256,
		320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048}
	classes = buildClasses()
	classOf = buildClassOf() // by (size+15)/16
)

// buildClasses cuts each class's runs: of 1, 2, 4 or 8 pages, whichever
// wastes least (by more than 2%).
func buildClasses() []sizeClass {
	var classes []sizeClass
	for _, size := range classSize {
		align := min(uint64(1)<<bits.TrailingZeros64(size), pageSize)
		var best sizeClass
		bestWaste := 2.0
		for _, pages := range []uint64{1, 2, 4, 8} {
			run := pages * pageSize
			n := run / size
			var start uint64
			for {
				words := (n + 63) / 64
				start = (words*8 + align - 1) / align * align
				m := (run - start) / size
				if m >= n {
					break
				}
				n = m
			}
			waste := float64(run-n*size) / float64(run)
			if n >= 2 && waste < bestWaste-0.02 {
				best = sizeClass{size: size, pages: pages, start: start, nslots: n, words: (n + 63) / 64, align: align, inv: 1<<32/size + 1}
				bestWaste = waste
			}
		}
		classes = append(classes, best)
	}
	return classes
}

func buildClassOf() (t [maxSmall/16 + 1]uint8) {
	c := 0
	for i := range t {
		for classes[c].size < uint64(i)*16 {
			c++
		}
		t[i] = uint8(c)
	}
	return t
}

// heap is one process's view of the segment manager. Its methods that
// change anything run with the segment lock held, inside a journaled
// operation (j.Begin ... j.End).
type heap struct {
	base  unsafe.Pointer
	j     journal.Journal
	fixed bool
	ro    bool                               // read-only: nothing may be written
	grow  func(newSize int64) (int64, error) // envelope growth
	size  func() int64
	max   int64
}

func (h *heap) w(off uintptr) *uint64     { return (*uint64)(unsafe.Add(h.base, off)) }
func (h *heap) get(off uintptr) uint64    { return *h.w(off) }
func (h *heap) set(off uintptr, v uint64) { h.j.Set64(off, v) }
func (h *heap) add(off uintptr, d uint64) { h.j.Set64(off, *h.w(off)+d) }

func (h *heap) desc(page uint64) uintptr {
	return uintptr(h.get(mTable) + page*descLen)
}

func dKind(w0 uint64) uint64  { return w0 & 0xff }
func dClass(w0 uint64) uint64 { return (w0 >> 8) & 0xff }
func dLive(w0 uint64) uint64  { return (w0 >> 16) & 0xffff }
func dPages(w0 uint64) uint64 { return w0 >> 32 }
func mkDesc(kind, class, live, pages uint64) uint64 {
	return kind | class<<8 | live<<16 | pages<<32
}
func lPrev(w1 uint64) uint64           { return w1 & 0xffffffff }
func lNext(w1 uint64) uint64           { return w1 >> 32 }
func mkLinks(prev, next uint64) uint64 { return prev | next<<32 }

func binOf(n uint64) uint64 { return min(n, numBins) - 1 }

// format lays out the manager in a new segment of size bytes.
func (h *heap) format(size int64) {
	pages := uint64(size) >> pageShift
	tcap := (pages + 255) &^ 255
	tpages := tcap * descLen / pageSize
	clear(unsafe.Slice((*byte)(unsafe.Add(h.base, mgrOff)), mgrPages*pageSize))
	*h.w(mMagic) = mgrMagic
	*h.w(mTable) = firstTable
	*h.w(mTableCap) = tcap
	clear(unsafe.Slice((*byte)(unsafe.Add(h.base, firstTable)), tpages*pageSize))
	meta := uint64(firstTable)>>pageShift + tpages
	for p := uint64(0); p < meta; p++ {
		*h.w(h.desc(p)) = mkDesc(kMeta, 0, 0, 1)
	}
	*h.w(mManaged) = pages
	h.j.Begin(opGrow)
	if pages > meta {
		h.add(mCapacity, (pages-meta)*pageSize)
		h.spanInsert(meta, pages-meta)
	}
	h.j.End()
}

// spanInsert makes pages [p, p+n) a free span and puts it in its bin.
func (h *heap) spanInsert(p, n uint64) {
	b := binOf(n)
	head := h.get(mBins + uintptr(b)*8)
	d := h.desc(p)
	h.set(d, mkDesc(kFree, 0, 0, n))
	h.set(d+8, mkLinks(0, head))
	if n > 1 {
		h.set(h.desc(p+n-1), mkDesc(kFreeTail, 0, 0, n))
	}
	if head != 0 {
		hd := h.desc(head) + 8
		h.set(hd, mkLinks(p, lNext(h.get(hd))))
	}
	h.set(mBins+uintptr(b)*8, p)
	if m := h.get(mBinMask); m&(1<<b) == 0 {
		h.set(mBinMask, m|1<<b)
	}
}

// spanRemove takes the free span at p (n pages) out of its bin.
func (h *heap) spanRemove(p, n uint64) {
	b := binOf(n)
	l := h.get(h.desc(p) + 8)
	prev, next := lPrev(l), lNext(l)
	if prev != 0 {
		pd := h.desc(prev) + 8
		h.set(pd, mkLinks(lPrev(h.get(pd)), next))
	} else {
		h.set(mBins+uintptr(b)*8, next)
		if next == 0 {
			h.set(mBinMask, h.get(mBinMask)&^(1<<b))
		}
	}
	if next != 0 {
		nd := h.desc(next) + 8
		h.set(nd, mkLinks(prev, lNext(h.get(nd))))
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
func (h *heap) findSpan(n, alignBytes uint64) (p, size, q uint64, ok bool) {
	b := binOf(n)
	mask := h.get(mBinMask) >> b << b
	for mask != 0 {
		bb := uint64(bits.TrailingZeros64(mask))
		mask &^= 1 << bb
		for s := h.get(mBins + uintptr(bb)*8); s != 0; s = lNext(h.get(h.desc(s) + 8)) {
			sz := dPages(h.get(h.desc(s)))
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
			return q, nil
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
// neighbours.
func (h *heap) pageFree(p, n uint64) {
	start, cnt := p, n
	if p > 0 {
		l := h.get(h.desc(p - 1))
		switch {
		case dKind(l) == kFree && dPages(l) == 1:
			h.spanRemove(p-1, 1)
			start, cnt = p-1, cnt+1
		case dKind(l) == kFreeTail:
			ln := dPages(l)
			h.spanRemove(p-ln, ln)
			start, cnt = p-ln, cnt+ln
		}
	}
	if r := p + n; r < h.get(mManaged) {
		if rw := h.get(h.desc(r)); dKind(rw) == kFree {
			rn := dPages(rw)
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
	newSize := max(want<<pageShift, cur+min(cur, 1<<30)) // double, by at most 1 GiB
	newSize = min(newSize, uint64(h.max))
	if newSize < want<<pageShift {
		return fmt.Errorf("%d more pages needed, past the maximum size %d: %w", n, h.max, ErrNoSpace)
	}
	got, err := h.grow(int64(newSize))
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
	h.pageFree(old>>pageShift, otp)
}

// newRun cuts a fresh run for class c and makes it the head of the
// class's partial list (which is empty).
func (h *heap) newRun(c int) (uint64, error) {
	cl := &classes[c]
	p, err := h.pageAlloc(cl.pages, 0)
	if err != nil {
		return 0, err
	}
	// The run's bitmap is fresh memory: write it without recording it. If
	// the operation is rolled back the pages are free again.
	bm := unsafe.Slice((*uint64)(unsafe.Add(h.base, p<<pageShift)), cl.words)
	clear(bm)
	if extra := cl.words*64 - cl.nslots; extra > 0 {
		bm[cl.words-1] = ^uint64(0) << (64 - extra)
	}
	d := h.desc(p)
	h.set(d, mkDesc(kRun, uint64(c), 0, cl.pages))
	h.set(d+8, 0)
	h.markCont(p, cl.pages)
	h.set(mClasses+uintptr(c)*8, p)
	return p, nil
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

// allocSmall allocates a slot of class c; it returns its offset.
func (h *heap) allocSmall(c int) (uint64, error) {
	cl := &classes[c]
	head := mClasses + uintptr(c)*8
	run := h.get(head)
	if run == 0 {
		var err error
		if run, err = h.newRun(c); err != nil {
			return 0, err
		}
	}
	d := h.desc(run)
	w0 := h.get(d)
	roff := run << pageShift
	for i := uint64(0); i < cl.words; i++ {
		wo := uintptr(roff + i*8)
		bm := h.get(wo)
		if bm == ^uint64(0) {
			continue
		}
		b := uint64(bits.TrailingZeros64(^bm))
		h.set(wo, bm|1<<b)
		live := dLive(w0) + 1
		h.set(d, w0&^(0xffff<<16)|live<<16)
		if live == cl.nslots {
			// Full: off the partial list (it is the head).
			next := lNext(h.get(d + 8))
			h.set(head, next)
			if next != 0 {
				nd := h.desc(next) + 8
				h.set(nd, mkLinks(0, lNext(h.get(nd))))
			}
			h.set(d+8, 0)
		}
		h.add(mInUse, cl.size)
		return roff + cl.start + (i*64+b)*cl.size, nil
	}
	return 0, fmt.Errorf("run at page %d of size class %d is on the partial list but full: %w", run, cl.size, ErrCorrupt)
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

// slotOf is the slot of run offset rel in class cl, and whether rel is a
// slot's first byte.
func (cl *sizeClass) slotOf(rel uint64) (uint64, bool) {
	if rel < cl.start {
		return 0, false
	}
	x := rel - cl.start
	s := x * cl.inv >> 32
	return s, s < cl.nslots && s*cl.size == x
}

// block checks that off is the start of a live block; it returns the
// block's usable size, or an error that says why off is not one.
func (h *heap) block(off uint64) (uint64, error) {
	return h.lookup(off, false)
}

// freeAt frees the live block at off, or says why off is not one (and
// changes nothing).
func (h *heap) freeAt(off uint64) error {
	_, err := h.lookup(off, true)
	return err
}

func (h *heap) lookup(off uint64, free bool) (size uint64, err error) {
	if off < firstTable || off >= h.get(mManaged)<<pageShift {
		return 0, fmt.Errorf("offset %d is outside the managed memory: %w", off, ErrInvalidHandle)
	}
	page := off >> pageShift
	d := h.desc(page)
	w0 := h.get(d)
	if dKind(w0) == kCont {
		page = dPages(w0)
		d = h.desc(page)
		w0 = h.get(d)
	}
	switch dKind(w0) {
	case kLarge:
		n := dPages(w0)
		if off != page<<pageShift {
			return 0, fmt.Errorf("offset %d is inside the %d-page block at %d, not at its start: %w", off, n, page<<pageShift, ErrInvalidHandle)
		}
		if free {
			h.add(mInUse, -n*pageSize)
			h.pageFree(page, n)
		}
		return n * pageSize, nil
	case kRun:
		c := dClass(w0)
		if c >= uint64(len(classes)) {
			return 0, fmt.Errorf("offset %d: run at page %d has size class %d: %w", off, page, c, ErrCorrupt)
		}
		cl := &classes[c]
		rel := off - page<<pageShift
		s, ok := cl.slotOf(rel)
		if !ok {
			if rel >= cl.pages*pageSize {
				return 0, fmt.Errorf("offset %d is not in a live block: %w", off, ErrInvalidHandle)
			}
			return 0, fmt.Errorf("offset %d is not at the start of a %d-byte block: %w", off, cl.size, ErrInvalidHandle)
		}
		wo := uintptr(page<<pageShift + s/64*8)
		bm := h.get(wo)
		if bm&(1<<(s%64)) == 0 {
			return 0, fmt.Errorf("offset %d is a free %d-byte block (freed already?): %w", off, cl.size, ErrInvalidHandle)
		}
		if free {
			h.set(wo, bm&^(1<<(s%64)))
			h.freeSlot(page, d, w0, c)
		}
		return cl.size, nil
	}
	return 0, fmt.Errorf("offset %d is not in a live block: %w", off, ErrInvalidHandle)
}

// freeSlot updates run page (descriptor d, word w0, class c) after one of
// its slots was freed.
func (h *heap) freeSlot(page uint64, d uintptr, w0 uint64, c uint64) {
	cl := &classes[c]
	live := dLive(w0) - 1
	h.set(d, w0&^(0xffff<<16)|live<<16)
	h.add(mInUse, -cl.size)
	head := mClasses + uintptr(c)*8
	if live+1 == cl.nslots {
		// Was full: becomes the head of the partial list.
		old := h.get(head)
		h.set(d+8, mkLinks(0, old))
		if old != 0 {
			od := h.desc(old) + 8
			h.set(od, mkLinks(page, lNext(h.get(od))))
		}
		h.set(head, page)
	}
	if live == 0 && h.get(head) != page {
		// Empty and not the class's current run: give the pages back.
		l := h.get(d + 8)
		prev, next := lPrev(l), lNext(l)
		if prev != 0 {
			pd := h.desc(prev) + 8
			h.set(pd, mkLinks(lPrev(h.get(pd)), next))
		}
		if next != 0 {
			nd := h.desc(next) + 8
			h.set(nd, mkLinks(prev, lNext(h.get(nd))))
		}
		h.pageFree(page, cl.pages)
	}
}
