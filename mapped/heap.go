package mapped

import (
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
)

// The segment manager's layout. The envelope (internal/envelope) takes the first
// envelope.EnvelopeSize bytes; the manager area follows, then the page
// descriptor table, then pages the allocator hands out.
//
// Manager area (mgrOff; every field an 8-byte word). Its geometry (where
// the journal, the lanes and the first descriptor table go) is one of two,
// chosen when the segment is made (word 56; see geometry):
//
//	large (the default)              small (made at most 512 KiB)
//	page 0: the words below          page 0: the words below; lanes at 1536
//	page 1: undo journal, 4096 bytes page 1: undo journal, 2048 bytes; the
//	page 2: 8 lanes of 512 bytes             first table (128 pages) at 2048
//	then the first descriptor table
//
// The words:
//
//	offset  what
//	0       magic "MSHEAP07" (the format of the manager area, heap and
//	        name directory; "MSHEAP01" to "MSHEAP06" segments are
//	        ErrVersion)
//	8       segment lock (64-bit word, its low half a futex; see lock.go)
//	16      descriptor table offset
//	24      descriptor table capacity, in pages described
//	32      managed pages: the page heap covers pages [0, managed)
//	40      capacity: bytes of pages that can hold blocks
//	48      in use: the sum of the usable sizes of live blocks
//	56      geometry: 0 large, 1 small
//	64      mask of non-empty free-span bins
//	72      name directory: index table offset (0: none yet)
//	80      name directory: index size (64-byte groups, a power of two)
//	88      name directory: names
//	96      name directory: tombstones
//	128     fast-path intent record, 4 words (see fast.go)
//	256     free-span bins: 64 list heads (page index; 0 = empty)
//	768     size classes: 32 partial-run list heads (page index; 0 = empty)
//	1024    lane owners: 8 words (see lanes.go)
//	2048    block caches (large geometry): a word per attached-process
//	        seat, the offset of the seat's first magazine (see cache.go)
//
// Every value read from these words or the tables below that steers a
// read, a write or a loop is checked first (a page below the managed
// ones, a list that ends within as many steps, a descriptor of the kind
// its use needs); validate checks the fixed fields at every open. A bad
// value found in an operation fails it with ErrCorrupt: the helpers that
// cannot return an error record it (heap.fail) and skip the access, and
// the operation is rolled back when it ends.
//
// Page descriptor table: 16 bytes per page, indexed by page number:
//
//	word 0: bits 0-7 kind, 8-15 size class, 16-31 live blocks (runs),
//	        32-63 pages (heads, free tails) or the head page (continuations)
//	word 1: bits 0-31 previous, 32-63 next page in the descriptor's list
//	        (free-span bin or partial-run list)
//
// A small run is 1-8 pages cut into cells of one size class; its first
// bytes are a bitmap of live cells (bits past the last cell are set), the
// cells follow at the class's alignment. A large block is whole pages.
// Free pages form spans whose first and last descriptors carry the span's
// length; the descriptors inside a free span mean nothing, except that none
// of them is a run or large-block head.
const (
	pageSize  = envelope.PageSize
	pageShift = 12

	mgrOff    = envelope.EnvelopeSize
	mgrPages  = 3
	mMagic    = mgrOff + 0
	mLock     = mgrOff + 8
	mTable    = mgrOff + 16
	mTableCap = mgrOff + 24
	mManaged  = mgrOff + 32
	mCapacity = mgrOff + 40
	mInUse    = mgrOff + 48
	mGeometry = mgrOff + 56
	mBinMask  = mgrOff + 64
	mDirTable = mgrOff + 72
	mDirCap   = mgrOff + 80
	mDirCount = mgrOff + 88
	mDirTombs = mgrOff + 96
	mBins     = mgrOff + 256
	mClasses  = mgrOff + 768
	mgrEnd    = mgrOff + mgrPages*pageSize // the end of the largest manager area

	numBins  = 64
	descLen  = 16
	mgrMagic = 0x37305041454853_4d // "MSHEAP07" little-endian

	rootManager = 0 // the header root that holds mgrOff
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

// geometry is where a manager area's parts lie (see the layout above).
type geometry struct {
	journal    uintptr // undo journal
	journalLen int
	lanes      uintptr // lane records
	nLanes     int
	lo         uint64 // the first offset a block may have: the manager area's end
	table0     uint64 // the first descriptor table, when it lies in the manager area
	tcap0      uint64 // and its capacity in pages
}

// smallSegment is the largest size at creation that gets the small
// geometry: two manager pages instead of three and a table.
const smallSegment = 512 << 10

var geometries = [2]geometry{
	{journal: mgrOff + pageSize, journalLen: pageSize, lanes: mgrOff + 2*pageSize, nLanes: 8, lo: mgrOff + 3*pageSize},
	{journal: mgrOff + pageSize, journalLen: 2048, lanes: mgrOff + 1536, nLanes: 5, lo: mgrOff + 2*pageSize,
		table0: mgrOff + pageSize + 2048, tcap0: 128},
}

// geometryOf is the geometry the word at mGeometry names (the large one
// for a word that names none: validate refuses it).
func geometryOf(w uint64) *geometry {
	if w < uint64(len(geometries)) {
		return &geometries[w]
	}
	return &geometries[0]
}

// heap is one process's view of the segment manager. Its methods that
// change anything run with the segment lock held, inside a journaled
// operation (j.Begin ... j.End).
type heap struct {
	fault atomic.Pointer[error] // what an operation in flight found corrupt (fail)
	base  unsafe.Pointer
	j     journal.Journal
	fixed bool
	geo   *geometry
	grow  func(newSize int64) (int64, error) // envelope growth
	size  func() int64
	max   int64
	ckey  uint64 // block cache marker key (cache.go)
	// fresh, when set, is told the end offset of each run of pages taken
	// from the page heap (Segment.freshPages).
	fresh func(end uint64)
}

func (h *heap) w(off uintptr) *uint64     { return (*uint64)(unsafe.Add(h.base, off)) }
func (h *heap) get(off uintptr) uint64    { return *h.w(off) }
func (h *heap) set(off uintptr, v uint64) { h.j.Set64(off, v) }
func (h *heap) add(off uintptr, d uint64) { h.j.Set64(off, *h.w(off)+d) }

// fail records that the operation in flight found the segment corrupt.
// The caller skips the access the bad value would have steered; the
// operation goes on (every access stays bounded) and is rolled back when
// it ends (runJournaled takes the fault).
func (h *heap) fail(format string, args ...any) {
	err := corrupt(format, args...)
	h.fault.CompareAndSwap(nil, &err)
}

// failWith records err, a corrupt finding that a helper returned, as
// fail does, for the operation's caller to take.
func (h *heap) failWith(err error) { h.fault.CompareAndSwap(nil, &err) }

// takeFault returns and clears what fail recorded.
func (h *heap) takeFault() error {
	if h.fault.Load() == nil { // a plain load: the common case costs no locked instruction
		return nil
	}
	if p := h.fault.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// managed is the number of pages the page heap covers: every page index
// read from the segment must be below it.
func (h *heap) managed() uint64 { return h.get(mManaged) }

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

// format lays out the manager in a new segment of size bytes.
func (h *heap) format(size int64) {
	pages := uint64(size) >> pageShift
	g := uint64(0)
	if size <= smallSegment {
		g = 1
	}
	h.geo = &geometries[g]
	h.j = journal.At(h.base, h.geo.journal, h.geo.journalLen)
	clear(unsafe.Slice((*byte)(unsafe.Add(h.base, mgrOff)), h.geo.lo-mgrOff))
	*h.w(mMagic) = mgrMagic
	*h.w(mGeometry) = g
	t, tcap := h.geo.lo, (pages+255)&^255
	tpages := tcap * descLen / pageSize
	if h.geo.table0 != 0 {
		t, tcap, tpages = h.geo.table0, h.geo.tcap0, 0
	}
	*h.w(mTable) = t
	*h.w(mTableCap) = tcap
	clear(unsafe.Slice((*byte)(unsafe.Add(h.base, t)), tcap*descLen))
	meta := h.geo.lo>>pageShift + tpages
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
