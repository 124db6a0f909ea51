package mapped

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"unsafe"
)

// The name directory maps names to blocks: an open-addressing hash index
// (linear probing) whose slots each hold, in one word, 16 bits of the
// name's hash and the offset of the name's record. A record is one block:
//
//	offset  size  what
//	0       2     name length
//	2       2     layout length
//	4       1     flags: bit 0 unique-instance namespace, bit 1 wide sizes
//	5       1     log2 of the object's alignment
//	6       2     zero
//	8       8     element count (low 32 bits) and element size (high 32
//	              bits); with wide sizes, the count, then at 16 the size
//	16 (24)       name bytes, then the layout blob, then the object at the
//	              next multiple of its alignment
//
// The short header keeps a small named object and its name in one small
// block: "obj_12345" holding a uint64 with objects' 11-byte layout is 48
// bytes.
//
// Insert and remove are one journaled operation together with the
// allocation or free they go with, so after a crash a name is either
// present with its whole record or absent with its memory free. The index
// is rebuilt into a new block when it fills; the new one is published with
// one word.
const (
	recHeaderLen = 16 // 24 with wide sizes
	slotEmpty    = 0
	slotTomb     = 1
	slotOffMask  = 1<<48 - 1
	dirMinCap    = 64
	flagUnique   = 1
	flagWide     = 2

	// MaxNameLen is the longest name, in bytes.
	MaxNameLen = 1024
	// MaxLayoutLen is the longest layout blob a name may carry.
	MaxLayoutLen = 1<<16 - 1
)

// NameSpec describes the object a name is created for.
type NameSpec struct {
	Count    int64  // elements (0 or more)
	ElemSize int64  // bytes per element (may be 0)
	Align    int    // alignment of the object: a power of two up to 4096 (0 means 8)
	Layout   []byte // opaque description of the element type, kept with the name
}

// Named is a name in the directory and the object it names. Obj and
// Layout point into the segment: they are valid while the name exists.
type Named struct {
	Name     string
	Unique   bool // in the unique-instance namespace (see CreateNamed)
	Handle   Handle
	Obj      []byte // Count*ElemSize bytes
	Count    int64
	ElemSize int64
	Align    int
	Layout   []byte
}

// The name hash: the same in every process, run and build, so it is part
// of the segment format. It reads the name a word at a time and folds
// pairs of words through a 64x64->128-bit multiply; the constants are the
// fractional bits of the golden ratio and of the square roots of 2, 3 and
// 5.
const (
	hashK0 = 0x9e3779b97f4a7c15
	hashK1 = 0x6a09e667f3bcc909
	hashK2 = 0xbb67ae8584caa73b
	hashK3 = 0x3c6ef372fe94f82b
)

// fold multiplies a by b and folds the 128-bit product to 64 bits.
func fold(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// nameHash hashes the namespace and the name.
func nameHash(name string, unique bool) uint64 {
	n := len(name)
	b := unsafe.Slice(unsafe.StringData(name), n)
	seed := hashK0 ^ uint64(n)
	if unique {
		seed ^= hashK3
	}
	var x, y uint64
	switch {
	case n > 16:
		i := 0
		for ; n-i > 16; i += 16 {
			seed = fold(binary.LittleEndian.Uint64(b[i:])^hashK1, binary.LittleEndian.Uint64(b[i+8:])^seed)
		}
		x, y = binary.LittleEndian.Uint64(b[n-16:]), binary.LittleEndian.Uint64(b[n-8:])
	case n >= 8:
		x, y = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[n-8:])
	case n >= 4:
		x, y = uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[n-4:]))
	case n > 0:
		x = uint64(b[0])<<16 | uint64(b[n>>1])<<8 | uint64(b[n-1])
	}
	return fold(fold(x^hashK1, y^seed)^hashK2, seed^hashK1)
}

func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes, longer than %d: %w", len(name), MaxNameLen, ErrInvalidName)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q contains NUL: %w", name, ErrInvalidName)
	}
	return nil
}

func slotTag(hash uint64) uint64 { return (hash >> 48) << 48 }

// recMeta is a record's first word.
func recMeta(nameLen, layoutLen int, unique, wide bool, alignLog uint) uint64 {
	return uint64(nameLen) | uint64(layoutLen)<<16 | (b2u(unique)*flagUnique|b2u(wide)*flagWide)<<32 | uint64(alignLog)<<40
}

// hdrLen is the length of a record's header: where its name starts.
func hdrLen(meta uint64) uint64 { return recHeaderLen + meta>>33&1*8 }

// objOffset is where a record's object starts in its block.
func objOffset(meta uint64) uint64 {
	al := uint64(1) << (meta >> 40 & 0xff)
	return (hdrLen(meta) + meta&0xffff + meta>>16&0xffff + al - 1) &^ (al - 1)
}

// recName is the name a record holds (a string into the segment).
func (h *heap) recName(rec uint64) string {
	meta := h.get(uintptr(rec))
	return unsafe.String((*byte)(unsafe.Add(h.base, rec+hdrLen(meta))), meta&0xffff)
}

// find probes the index for name; it returns the slot's offset (0 if the
// name is absent), the record's offset and the record's first word. It
// reads with atomic loads and keeps every read inside the managed memory,
// so that it is also safe to run without the segment lock while a writer
// changes the directory (see LookupNamed): what it finds then is only
// trusted after validation.
func (h *heap) find(name string, unique bool) (slot uintptr, rec, meta uint64) {
	hash := nameHash(name, unique)
	base := h.base
	ld := func(off uint64) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(base, off))) }
	limit := ld(mManaged) << pageShift
	t, capa := ld(mDirTable), ld(mDirCap)
	if t == 0 || capa == 0 || capa&(capa-1) != 0 || t > limit || capa > (limit-t)/8 {
		return 0, 0, 0
	}
	mask := capa - 1
	tag := slotTag(hash)
	want := uint64(len(name)) | b2u(unique)<<32
	for i, n := hash&mask, uint64(0); n <= mask; i, n = (i+1)&mask, n+1 {
		so := t + i*8
		v := ld(so)
		if v == slotEmpty {
			return 0, 0, 0
		}
		if v&^slotOffMask != tag || v == slotTomb {
			continue
		}
		r := v & slotOffMask
		if r%8 != 0 || r > limit-recHeaderLen {
			continue
		}
		m := ld(r)
		if m&(0xffff|flagUnique<<32) != want || hdrLen(m)+uint64(len(name)) > limit-r {
			continue
		}
		if sameBytes(unsafe.Add(base, r+hdrLen(m)), name) {
			return uintptr(so), r, m
		}
	}
	return 0, 0, 0
}

// sameBytes reports whether the len(s) bytes at p are s. Names and
// layouts of 8 to 16 bytes, the common ones, take two word compares
// without a call.
func sameBytes(p unsafe.Pointer, s string) bool {
	n := len(s)
	if n < 8 || n > 16 {
		return unsafe.String((*byte)(p), n) == s
	}
	b := unsafe.Slice(unsafe.StringData(s), n)
	return binary.LittleEndian.Uint64(unsafe.Slice((*byte)(p), 8)) == binary.LittleEndian.Uint64(b) &&
		binary.LittleEndian.Uint64(unsafe.Slice((*byte)(unsafe.Add(p, n-8)), 8)) == binary.LittleEndian.Uint64(b[n-8:])
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// view reads the record at rec, whose first word find read as meta:
// where its object starts, and the object's element count and size. Run
// under the segment lock it cannot fail; run optimistically it reports
// false when the record does not fit in the managed memory (it was being
// changed). It returns scalars, not a struct: a struct result copied
// through the stack stalls on store forwarding, which cost a lookup about
// a third of its time.
func (h *heap) view(rec, meta uint64) (obj, count, esize uint64, ok bool) {
	base := h.base
	ld := func(off uint64) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(base, off))) }
	limit := ld(mManaged) << pageShift
	if meta&(flagWide<<32) == 0 {
		sizes := ld(rec + 8)
		count, esize = sizes&(1<<32-1), sizes>>32
	} else if rec+24 <= limit {
		count, esize = ld(rec+8), ld(rec+16)
	}
	if meta>>40&0xff > pageShift || count > math.MaxInt64 || esize > math.MaxInt64 {
		return 0, 0, 0, false
	}
	obj = rec + objOffset(meta)
	hi, size := bits.Mul64(count, esize)
	if hi != 0 || obj > limit || size > limit-obj {
		return 0, 0, 0, false
	}
	return obj, count, esize, true
}

// layout is the layout blob of the record at rec.
func (h *heap) layout(rec, meta uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(h.base, rec+hdrLen(meta)+meta&0xffff)), meta>>16&0xffff)
}

// layoutIs reports whether the layout blob of the record at rec is want.
// Run after view accepted the record, it reads inside the segment (the
// object, which follows the blob, fits).
func (h *heap) layoutIs(rec, meta uint64, want []byte) bool {
	return meta>>16&0xffff == uint64(len(want)) && sameBytes(unsafe.Add(h.base, rec+hdrLen(meta)+meta&0xffff), unsafe.String(unsafe.SliceData(want), len(want)))
}

// named describes the record at rec from what view read of it; name is
// the caller's copy of its name.
func (s *Segment) named(rec, meta, obj, count, esize uint64, name string) Named {
	return Named{
		Name: name, Unique: (meta>>32)&flagUnique != 0, Handle: s.handle(obj),
		Obj:   unsafe.Slice((*byte)(unsafe.Add(s.h.base, obj)), count*esize),
		Count: int64(count), ElemSize: int64(esize), Align: 1 << (meta >> 40 & 0xff),
		Layout: s.h.layout(rec, meta),
	}
}

// namedAt describes the record at rec; run under the segment lock.
func (s *Segment) namedAt(rec uint64, name string) Named {
	meta := s.h.get(uintptr(rec))
	obj, count, esize, _ := s.h.view(rec, meta)
	return s.named(rec, meta, obj, count, esize, name)
}

// CreateNamed creates name for an object of spec's shape, runs init on the
// object's memory (zeroed; init must not call the segment's methods) and
// publishes the name, all as one crash-atomic step. A taken name is
// ErrExists and the existing object is untouched. unique selects a
// namespace of its own, for one-per-type instances.
func (s *Segment) CreateNamed(name string, unique bool, spec NameSpec, init func(obj []byte)) (Named, error) {
	if err := checkName(name); err != nil {
		return Named{}, fmt.Errorf("mapstore: create %q in %s: %w", name, s.b.Name(), err)
	}
	align := uint64(spec.Align)
	if align == 0 {
		align = 8
	}
	hi, size := bits.Mul64(uint64(spec.Count), uint64(spec.ElemSize))
	switch {
	case spec.Count < 0 || spec.ElemSize < 0 || hi != 0 || size > MaxMaxSize:
		return Named{}, fmt.Errorf("mapstore: create %q in %s: %d elements of %d bytes: %w", name, s.b.Name(), spec.Count, spec.ElemSize, ErrInvalidSize)
	case align&(align-1) != 0 || align > pageSize:
		return Named{}, fmt.Errorf("mapstore: create %q in %s: alignment %d: %w", name, s.b.Name(), spec.Align, ErrInvalidSize)
	case len(spec.Layout) > MaxLayoutLen:
		return Named{}, fmt.Errorf("mapstore: create %q in %s: layout of %d bytes: %w", name, s.b.Name(), len(spec.Layout), ErrInvalidSize)
	}
	wide := spec.Count >= 1<<32 || spec.ElemSize >= 1<<32
	meta := recMeta(len(name), len(spec.Layout), unique, wide, uint(bits.TrailingZeros64(align)))
	if err := s.lockW("create", opInsertName); err != nil {
		return Named{}, err
	}
	rec, err := s.h.insert(name, meta, size, spec, init)
	var n Named
	if err == nil {
		n = s.namedAt(rec, name)
	}
	s.unlockW()
	if err != nil {
		return Named{}, fmt.Errorf("mapstore: create %q in %s: %w", name, s.b.Name(), err)
	}
	return n, nil
}

func (h *heap) insert(name string, meta, size uint64, spec NameSpec, init func([]byte)) (uint64, error) {
	unique := meta>>32&flagUnique != 0
	if so, _, _ := h.find(name, unique); so != 0 {
		return 0, ErrExists
	}
	if err := h.reserveSlot(); err != nil {
		return 0, err
	}
	objOff := objOffset(meta)
	rec, usable, err := h.alloc(objOff+size, max(uint64(1)<<(meta>>40&0xff), 16))
	if err != nil {
		return 0, err
	}
	// The block is new: write it without recording (a rollback frees it).
	b := unsafe.Slice((*byte)(unsafe.Add(h.base, rec)), usable)
	clear(b[:objOff+size])
	*h.w(uintptr(rec)) = meta
	if meta&(flagWide<<32) != 0 {
		*h.w(uintptr(rec + 8)) = uint64(spec.Count)
		*h.w(uintptr(rec + 16)) = uint64(spec.ElemSize)
	} else {
		*h.w(uintptr(rec + 8)) = uint64(spec.Count) | uint64(spec.ElemSize)<<32
	}
	hl := hdrLen(meta)
	copy(b[hl:], name)
	copy(b[hl+uint64(len(name)):], spec.Layout)
	if init != nil {
		init(b[objOff : objOff+size])
	}
	// Publish: one word in the index.
	hash := nameHash(name, unique)
	mask := h.get(mDirCap) - 1
	t := h.get(mDirTable)
	for i := hash & mask; ; i = (i + 1) & mask {
		so := uintptr(t + i*8)
		v := h.get(so)
		if v == slotEmpty || v == slotTomb {
			h.set(so, slotTag(hash)|rec)
			if v == slotTomb {
				h.add(mDirTombs, ^uint64(0))
			}
			h.add(mDirCount, 1)
			return rec, nil
		}
	}
}

// reserveSlot makes sure the index has room for one more name, creating
// or rebuilding it.
func (h *heap) reserveSlot() error {
	t, capa := h.get(mDirTable), h.get(mDirCap)
	count, tombs := h.get(mDirCount), h.get(mDirTombs)
	// Up to 7/8 full: with 16-bit tags in the slots, a probe reads
	// another slot of the same cache line far more often than another
	// line, and a denser index keeps more of it in cache. A rebuild
	// leaves it at most half full.
	if t != 0 && (count+tombs+1)*8 <= capa*7 {
		return nil
	}
	ncap := uint64(dirMinCap)
	for (count+1)*2 > ncap {
		ncap *= 2
	}
	nt, _, err := h.alloc(ncap*8, 16)
	if err != nil {
		return err
	}
	idx := unsafe.Slice((*uint64)(unsafe.Add(h.base, nt)), ncap)
	clear(idx)
	for i := uint64(0); i < capa; i++ {
		v := h.get(uintptr(t + i*8))
		if v == slotEmpty || v == slotTomb {
			continue
		}
		rec := v & slotOffMask
		j := nameHash(h.recName(rec), h.get(uintptr(rec))>>32&flagUnique != 0) & (ncap - 1)
		for idx[j] != slotEmpty {
			j = (j + 1) & (ncap - 1)
		}
		idx[j] = v
	}
	h.set(mDirTable, nt)
	h.set(mDirCap, ncap)
	h.set(mDirTombs, 0)
	if t != 0 {
		return h.freeAt(t)
	}
	return nil
}

// LookupNamed finds name. It does not allocate. A missing name is
// ErrNotFound.
func (s *Segment) LookupNamed(name string, unique bool) (Named, error) {
	if s.closed.Load() {
		return Named{}, s.errClosed("find")
	}
	rec, meta, obj, count, esize, _, found := s.lookup(name, unique, nil)
	if !found {
		return Named{}, s.notFound(name)
	}
	return s.named(rec, meta, obj, count, esize, name), nil
}

// LookupNamedAs is LookupNamed for a caller that knows the layout blob it
// expects, as the typed layer does: it returns the address of the object
// and its element count, and whether the stored layout is exactly layout,
// all read in one step. It does not allocate. When exact is false the
// caller decides with LookupNamed's whole description (the layouts may
// still be compatible by the caller's rules).
func (s *Segment) LookupNamedAs(name string, unique bool, layout []byte) (obj unsafe.Pointer, count int64, exact bool, err error) {
	if s.closed.Load() {
		return nil, 0, false, s.errClosed("find")
	}
	// The common case first, in as few instructions as may be: lookups in
	// a loop then overlap their cache misses. These are probe's steps
	// written out: calling probe here costs about 35 instructions more
	// per lookup (9%), measured with perf stat.
	if lw, ok := s.lk.readBegin(); ok {
		_, rec, meta := s.h.find(name, unique)
		if rec != 0 {
			off, n, _, ok := s.h.view(rec, meta)
			exact = ok && s.h.layoutIs(rec, meta, layout)
			if ok && s.lk.readValid(lw) {
				return unsafe.Add(s.h.base, off), int64(n), exact, nil
			}
		} else if s.lk.readValid(lw) {
			return nil, 0, false, s.notFound(name)
		}
	}
	_, _, off, n, _, exact, found := s.lookup(name, unique, layout)
	if !found {
		return nil, 0, false, s.notFound(name)
	}
	return unsafe.Add(s.h.base, off), int64(n), exact, nil
}

// lookup finds name's record and what view reads of it and, when want is
// not nil, compares the stored layout with want. It reads optimistically
// first: without the lock, then it checks that no writer took the lock
// meanwhile. No locked instruction, so lookups in a loop overlap their
// cache misses. After 4 failed tries (or while a writer holds the lock)
// it takes the lock.
func (s *Segment) lookup(name string, unique bool, want []byte) (rec, meta, obj, count, esize uint64, exact, found bool) {
	for range 4 {
		lw, ok := s.lk.readBegin()
		if !ok {
			break
		}
		rec, meta, obj, count, esize, exact, ok = s.probe(name, unique, want)
		if ok && s.lk.readValid(lw) {
			return rec, meta, obj, count, esize, exact, rec != 0
		}
	}
	if !s.h.ro {
		s.lk.lock()
	}
	rec, meta, obj, count, esize, exact, _ = s.probe(name, unique, want)
	if !s.h.ro {
		s.lk.unlock()
	}
	return rec, meta, obj, count, esize, exact, rec != 0
}

// probe is one try of lookup: rec is 0 when the name is absent, and ok is
// false when what it read does not hold together (only possible without
// the lock).
func (s *Segment) probe(name string, unique bool, want []byte) (rec, meta, obj, count, esize uint64, exact, ok bool) {
	if _, rec, meta = s.h.find(name, unique); rec == 0 {
		return 0, 0, 0, 0, 0, false, true
	}
	if obj, count, esize, ok = s.h.view(rec, meta); !ok {
		return 0, 0, 0, 0, 0, false, false
	}
	return rec, meta, obj, count, esize, want != nil && s.h.layoutIs(rec, meta, want), true
}

func (s *Segment) notFound(name string) error {
	return fmt.Errorf("mapstore: find %q in %s: %w", name, s.b.Name(), ErrNotFound)
}

// RemoveNamed removes name and frees its object, as one crash-atomic step.
// check (if not nil) runs first, under the segment lock, and its error
// stops the removal. A missing name is ErrNotFound.
func (s *Segment) RemoveNamed(name string, unique bool, check func(Named) error) error {
	_, err := s.remove(name, unique, check, false, nil)
	return err
}

// RemoveNamedAs is RemoveNamed for a caller that knows the layout blob it
// expects, as the typed layer does: it removes name only when the stored
// layout is exactly layout. Otherwise removed is false, the error nil,
// and nothing changes (the caller decides with RemoveNamed and a check).
func (s *Segment) RemoveNamedAs(name string, unique bool, layout []byte) (removed bool, err error) {
	return s.remove(name, unique, nil, true, layout)
}

func (s *Segment) remove(name string, unique bool, check func(Named) error, exact bool, want []byte) (bool, error) {
	if err := s.lockW("remove", opRemoveName); err != nil {
		return false, err
	}
	h := s.h
	so, rec, meta := h.find(name, unique)
	var err error
	switch {
	case so == 0:
		err = s.notFound(name)
	case exact && !h.layoutIs(rec, meta, want):
		s.unlockW()
		return false, nil
	case check != nil:
		err = check(s.namedAt(rec, name))
	}
	if err == nil {
		// A slot followed by an empty one can be empty itself: no probe
		// for another name passes through it. Otherwise it is a tombstone.
		t, mask := h.get(mDirTable), h.get(mDirCap)-1
		if h.get(uintptr(t+(uint64(so)-t+8)&(mask*8))) == slotEmpty {
			h.set(so, slotEmpty)
		} else {
			h.set(so, slotTomb)
			h.add(mDirTombs, 1)
		}
		h.add(mDirCount, ^uint64(0))
		if ferr := h.freeAt(rec); ferr != nil {
			err = fmt.Errorf("mapstore: remove %q in %s: %w", name, s.b.Name(), ferr)
		} else if h.get(mDirCount) == 0 {
			// The last name: free the index too, in the same operation,
			// so that an empty directory holds no memory.
			h.set(mDirTable, 0)
			h.set(mDirCap, 0)
			h.set(mDirTombs, 0)
			if ferr := h.freeAt(t); ferr != nil {
				err = fmt.Errorf("mapstore: remove %q in %s: index: %w", name, s.b.Name(), ferr)
			}
		}
	}
	s.unlockW()
	return err == nil, err
}

// NamedCount is the number of names in the directory.
func (s *Segment) NamedCount() int {
	if s.closed.Load() {
		return 0
	}
	var n uint64
	s.lockR(func() { n = s.h.get(mDirCount) })
	return int(n)
}

// NamedObjects iterates over the directory: a snapshot taken under the
// segment lock, in index order. The loop body may use the segment.
func (s *Segment) NamedObjects() iter.Seq[Named] {
	return func(yield func(Named) bool) {
		if s.closed.Load() {
			return
		}
		var all []Named
		s.lockR(func() {
			t, capa := s.h.get(mDirTable), s.h.get(mDirCap)
			for i := uint64(0); t != 0 && i < capa; i++ {
				v := s.h.get(uintptr(t + i*8))
				if v == slotEmpty || v == slotTomb {
					continue
				}
				rec := v & slotOffMask
				all = append(all, s.namedAt(rec, strings.Clone(s.h.recName(rec))))
			}
		})
		for _, n := range all {
			if !yield(n) {
				return
			}
		}
	}
}

// checkDirectory is the name directory's part of CheckSanity.
func (h *heap) checkDirectory() error {
	t, capa := h.get(mDirTable), h.get(mDirCap)
	count, tombs := h.get(mDirCount), h.get(mDirTombs)
	if t == 0 {
		if count != 0 || tombs != 0 {
			return corrupt("name directory has no index but counts %d names", count)
		}
		return nil
	}
	if capa < dirMinCap || capa&(capa-1) != 0 {
		return corrupt("name index capacity %d is not a power of two", capa)
	}
	if sz, err := h.block(t); err != nil || sz < capa*8 {
		return corrupt("name index at %d (%d slots) is not a live block of its size: %v", t, capa, err)
	}
	var n, tb uint64
	for i := uint64(0); i < capa; i++ {
		v := h.get(uintptr(t + i*8))
		switch v {
		case slotEmpty:
			continue
		case slotTomb:
			tb++
			continue
		}
		n++
		rec := v & slotOffMask
		sz, err := h.block(rec)
		if err != nil {
			return corrupt("name index slot %d: record at %d: %v", i, rec, err)
		}
		meta := h.get(uintptr(rec))
		if meta>>48 != 0 || meta>>32&0xff&^(flagUnique|flagWide) != 0 || meta>>40&0xff > pageShift || sz < hdrLen(meta) {
			return corrupt("name record at %d: bad flags or alignment in %#x", rec, meta)
		}
		_, count, esize, ok := h.view(rec, meta)
		hi, osz := bits.Mul64(count, esize)
		if !ok || hi != 0 || objOffset(meta) > sz || osz > sz-objOffset(meta) {
			return corrupt("name record at %d does not fit its %d-byte block", rec, sz)
		}
		name := h.recName(rec)
		if err := checkName(name); err != nil {
			return corrupt("name record at %d: %v", rec, err)
		}
		hash := nameHash(name, (meta>>32)&flagUnique != 0)
		if slotTag(hash) != v&^slotOffMask {
			return corrupt("name record %q at %d: index slot %d has the wrong hash tag", name, rec, i)
		}
		if so, _, _ := h.find(name, (meta>>32)&flagUnique != 0); so != uintptr(t+i*8) {
			return corrupt("name %q in index slot %d is not found by a lookup", name, i)
		}
	}
	if n != count || tb != tombs {
		return corrupt("name index holds %d names and %d tombstones, counters say %d and %d", n, tb, count, tombs)
	}
	return nil
}
