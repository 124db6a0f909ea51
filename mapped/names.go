package mapped

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"strings"
	"sync/atomic"
	"unsafe"
)

// The name directory maps names to blocks: an open-addressing hash index
// of groups, and one record per name.
//
// A group is one 64-byte cache line: a control word, then 7 slots. Control
// byte k (k = 0..6, little-endian) tells slot k's state: 0x80 empty, 0xfe
// a tombstone, or 7 bits of the name's hash (bits 41-47) when the slot is
// full; byte 7 is always 0xff. A full slot holds, in one word, 16 more
// bits of the hash (bits 48-63, on top) and the offset of the record. A
// name's probe starts at the group its hash's low bits choose and goes on
// group by group until a group with an empty slot: all 7 control bytes are
// compared at once, with word arithmetic, so a lookup usually reads one
// control word, one slot and the record, with no data-dependent branch
// to mispredict in between.
//
// A record is one block:
//
//	offset  size  what
//	0       2     name length
//	2       2     layout length
//	4       1     flags: bit 0 unique-instance namespace, bit 1 wide sizes
//	5       1     log2 of the object's alignment
//	6       2     check: 16 bits of a hash of the header (with these
//	              bits zero), the name and the layout blob
//	8       8     element count (low 32 bits) and element size (high 32
//	              bits); with wide sizes, the count, then at 16 the size
//	16 (24)       name bytes, then the layout blob, then the object at the
//	              next multiple of its alignment
//
// The check lets CheckSanity find a record damaged in a way that still
// fits its block (a count or a name byte changed), which lookups would
// otherwise believe; lookups do not compute it.
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
	slotOffMask  = 1<<48 - 1
	flagUnique   = 1
	flagWide     = 2

	groupLen     = 64 // bytes: the control word and 7 slots
	groupSlots   = 7
	dirMinGroups = 8
	ctrlEmpty    = 0x80
	ctrlTomb     = 0xfe
	ctrlLSB      = 0x0101010101010101
	ctrlMSB      = 0x8080808080808080
	ctrlFree     = 0x0080808080808080 // bit 7 of bytes 0-6: set when empty or a tombstone
	ctrlNew      = 0xff80808080808080 // a new group: 7 empty slots

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
	p := unsafe.Pointer(unsafe.StringData(name))
	seed := hashK0 ^ uint64(n)
	if unique {
		seed ^= hashK3
	}
	var x, y uint64
	switch {
	case n > 16:
		i := 0
		for ; n-i > 16; i += 16 {
			seed = fold(le64(unsafe.Add(p, i))^hashK1, le64(unsafe.Add(p, i+8))^seed)
		}
		x, y = le64(unsafe.Add(p, n-16)), le64(unsafe.Add(p, n-8))
	case n >= 8:
		x, y = le64(p), le64(unsafe.Add(p, n-8))
	case n >= 4:
		x, y = le32(p), le32(unsafe.Add(p, n-4))
	case n > 0:
		b := unsafe.Slice((*byte)(p), n)
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

// slotTag is the part of hash a full slot keeps (on top of the record's
// offset), ctrlTag the part its control byte keeps.
func slotTag(hash uint64) uint64 { return (hash >> 48) << 48 }
func ctrlTag(hash uint64) uint64 { return hash >> 41 & 0x7f }

// ctrlMatch marks (bit 7 of the byte) the slots of control word c whose
// control byte is tag: every such slot, and now and then a full slot just
// above one, which the slot's own tag then rules out. Empty, tombstone and
// unused bytes (bit 7 set) are never marked.
func ctrlMatch(c, tag uint64) uint64 {
	x := c ^ ctrlLSB*tag
	return (x - ctrlLSB) &^ x & ctrlMSB
}

// ctrlEmpties marks the empty slots of control word c (0x80: bit 7 set,
// bit 1 clear; a tombstone and the unused byte have bit 1 set).
func ctrlEmpties(c uint64) uint64 { return c &^ (c << 6) & ctrlMSB }

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

// recCheck is the check of the record at rec whose first word is meta:
// 16 bits of a hash (nameHash's, one pass a word at a time) of its header
// (check bits zero), name and layout blob. The caller has made sure they
// lie in the record's block.
func (h *heap) recCheck(rec, meta uint64) uint64 {
	n := hdrLen(meta) - 8 + meta&0xffff + meta>>16&0xffff
	x := fold(nameHash(unsafe.String((*byte)(unsafe.Add(h.base, rec+8)), n), false)^meta&(1<<48-1), hashK2)
	return (x ^ x>>16 ^ x>>32 ^ x>>48) & 0xffff
}

// recName is the name the record at rec holds (a string into the
// segment), if its header and name lie below limit.
func (h *heap) recName(rec, limit uint64) (string, bool) {
	if rec%8 != 0 || rec < h.geo.lo || rec > limit-recHeaderLen {
		return "", false
	}
	meta := h.get(uintptr(rec))
	hl, n := hdrLen(meta), meta&0xffff
	if hl+n > limit-rec {
		return "", false
	}
	return unsafe.String((*byte)(unsafe.Add(h.base, rec+hl)), n), true
}

// dirTable is the name index's offset and size in groups (0, 0: no index
// yet), checked: a power of two of groups, 64-byte aligned, inside the
// managed memory.
func (h *heap) dirTable() (t, groups uint64, err error) {
	t, groups = h.get(mDirTable), h.get(mDirCap)
	if t == 0 {
		return 0, 0, nil
	}
	limit := h.get(mManaged) << pageShift
	if t%groupLen != 0 || groups == 0 || groups&(groups-1) != 0 || t > limit || groups > (limit-t)/groupLen {
		return 0, 0, corrupt("name index at offset %d with %d groups does not fit the managed memory (%d bytes)", t, groups, limit)
	}
	return t, groups, nil
}

// What locate found.
const (
	locAbsent = iota // the name is not in the index
	locFound         // the record and its object fit the managed memory
	locTorn          // the name's record does not fit: it was being changed (or is corrupt)
)

// locate probes the index for name, whose nameHash is hash (the caller
// computes it: an insert needs it again), and reads the record it finds:
// the slot's offset, the record's offset and first word, where the object
// starts, its element count and size, and whether the stored layout blob
// is want byte for byte. It reads with atomic loads and keeps every read
// inside the managed memory, so that it is also safe to run without the
// segment lock while a writer changes the directory (see lookupName): what it
// finds then is only trusted after validation. With the lock held,
// locTorn means a corrupt record.
//
// It is one function on purpose: lookups in a loop overlap their cache
// misses only when few instructions separate them, and each call costs
// some (bench/README.md has the measurements).
func (h *heap) locate(hash uint64, name string, unique bool, want []byte) (slot uintptr, rec, meta, obj, count, esize uint64, exact bool, st int) {
	base := h.base
	ld := func(off uint64) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(base, off))) }
	limit := ld(mManaged) << pageShift
	t, groups := ld(mDirTable), ld(mDirCap)
	if t == 0 || t%groupLen != 0 || groups == 0 || groups&(groups-1) != 0 || t > limit || groups > (limit-t)/groupLen {
		return 0, 0, 0, 0, 0, 0, false, locAbsent
	}
	gmask := groups - 1
	tag, ct := slotTag(hash), ctrlTag(hash)
	nl := uint64(len(name))
	wantMeta := nl | b2u(unique)<<32
	for g, n := hash&gmask, uint64(0); n <= gmask; g, n = (g+1)&gmask, n+1 {
		gb := t + g*groupLen
		c := ld(gb)
		for cand := ctrlMatch(c, ct); cand != 0; cand &= cand - 1 {
			so := gb + 8 + uint64(bits.TrailingZeros64(cand))&^7
			v := ld(so)
			r := v & slotOffMask
			if v&^slotOffMask != tag || r%8 != 0 || r > limit-recHeaderLen {
				continue
			}
			m := ld(r)
			// The header's length comes from a branch, not from arithmetic on
			// m, so that the loads of the name, the sizes and the layout do
			// not wait for m: all the record's cache lines are fetched at
			// once (a 48-byte record straddles two lines half the time).
			var hl uint64
			switch m & (0xffff | (flagUnique|flagWide)<<32) {
			case wantMeta:
				hl = recHeaderLen
			case wantMeta | flagWide<<32:
				hl = recHeaderLen + 8
			default:
				continue
			}
			if hl+nl > limit-r || !sameBytes(unsafe.Add(base, r+hl), name) {
				continue
			}
			count, esize = h.sizes(r, m, limit)
			obj = r + objOffset(m)
			if !fits(m, obj, count, esize, limit) {
				return uintptr(so), r, m, 0, 0, 0, false, locTorn
			}
			// The blob lies between the name and the object, which fits.
			ll := m >> 16 & 0xffff
			exact = ll == uint64(len(want)) && sameBytes(unsafe.Add(base, r+hl+nl), unsafe.String(unsafe.SliceData(want), len(want)))
			return uintptr(so), r, m, obj, count, esize, exact, locFound
		}
		if ctrlEmpties(c) != 0 {
			break
		}
	}
	return 0, 0, 0, 0, 0, 0, false, locAbsent
}

// find is locate for the writers, which hold the lock: the slot's offset
// (0 if the name is absent), the record's offset and first word.
func (h *heap) find(name string, unique bool) (slot uintptr, rec, meta uint64) {
	slot, rec, meta, _, _, _, _, _ = h.locate(nameHash(name, unique), name, unique, nil)
	return slot, rec, meta
}

// sameBytes reports whether the len(s) bytes at p are s. Names and
// layouts of 8 to 16 bytes, the common ones, take two word compares
// without a call.
func sameBytes(p unsafe.Pointer, s string) bool {
	n := len(s)
	if n < 8 || n > 16 {
		return unsafe.String((*byte)(p), n) == s
	}
	q := unsafe.Pointer(unsafe.StringData(s))
	return le64(p) == le64(q) && le64(unsafe.Add(p, n-8)) == le64(unsafe.Add(q, n-8))
}

// le64 is the little-endian word at p: one load where the machine allows
// unaligned loads, and without the bounds checks of a slice.
func le64(p unsafe.Pointer) uint64 { return binary.LittleEndian.Uint64((*[8]byte)(p)[:]) }

// le32 is the little-endian 32-bit word at p.
func le32(p unsafe.Pointer) uint64 { return uint64(binary.LittleEndian.Uint32((*[4]byte)(p)[:])) }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// view reads the record at rec, whose first word locate read as meta:
// where its object starts, and the object's element count and size. Run
// under the segment lock it cannot fail; run optimistically it reports
// false when the record does not fit in the managed memory (it was being
// changed). It returns scalars, not a struct: a struct result copied
// through the stack stalls on store forwarding (bench/README.md).
func (h *heap) view(rec, meta uint64) (obj, count, esize uint64, ok bool) {
	limit := atomic.LoadUint64((*uint64)(unsafe.Add(h.base, mManaged))) << pageShift
	count, esize = h.sizes(rec, meta, limit)
	if obj = rec + objOffset(meta); !fits(meta, obj, count, esize, limit) {
		return 0, 0, 0, false
	}
	return obj, count, esize, true
}

// sizes reads the element count and size of the record at rec (0 and 0
// when a wide record would not fit below limit).
func (h *heap) sizes(rec, meta, limit uint64) (count, esize uint64) {
	if meta&(flagWide<<32) == 0 {
		w := atomic.LoadUint64((*uint64)(unsafe.Add(h.base, rec+8)))
		return w & (1<<32 - 1), w >> 32
	}
	if rec+24 > limit {
		return 0, 0
	}
	return atomic.LoadUint64((*uint64)(unsafe.Add(h.base, rec+8))), atomic.LoadUint64((*uint64)(unsafe.Add(h.base, rec+16)))
}

// fits reports whether the object of a record with first word meta,
// starting at obj and count elements of esize bytes, fits below limit
// with a valid alignment.
func fits(meta, obj, count, esize, limit uint64) bool {
	hi, size := bits.Mul64(count, esize)
	return hi|(count|esize)>>63 == 0 && meta>>40&0xff <= pageShift && obj <= limit && size <= limit-obj
}

// layout is the layout blob of the record at rec.
func (h *heap) layout(rec, meta uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(h.base, rec+hdrLen(meta)+meta&0xffff)), meta>>16&0xffff)
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
	rec, err := s.createNamed(name, unique, spec, init)
	if err != nil {
		return Named{}, err
	}
	return s.namedAt(rec, name), nil
}

// CreateNamedAs is CreateNamed for the typed layer, which needs only the
// object's address: it builds no Named.
func (s *Segment) CreateNamedAs(name string, unique bool, spec NameSpec, init func(obj []byte)) (obj unsafe.Pointer, err error) {
	rec, err := s.createNamed(name, unique, spec, init)
	if err != nil {
		return nil, err
	}
	return unsafe.Add(s.h.base, rec+objOffset(s.h.get(uintptr(rec)))), nil
}

// createNamed does CreateNamed's work; it returns the record's offset.
func (s *Segment) createNamed(name string, unique bool, spec NameSpec, init func(obj []byte)) (rec uint64, err error) {
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("mapstore: create %q in %s: %w", name, s.b.Name(), err)
	}
	align := uint64(spec.Align)
	if align == 0 {
		align = 8
	}
	hi, size := bits.Mul64(uint64(spec.Count), uint64(spec.ElemSize))
	switch {
	case spec.Count < 0 || spec.ElemSize < 0 || spec.Count > MaxMaxSize || hi != 0 || size > MaxMaxSize:
		return 0, fmt.Errorf("mapstore: create %q in %s: %d elements of %d bytes: %w", name, s.b.Name(), spec.Count, spec.ElemSize, ErrInvalidSize)
	case align&(align-1) != 0 || align > pageSize:
		return 0, fmt.Errorf("mapstore: create %q in %s: alignment %d: %w", name, s.b.Name(), spec.Align, ErrInvalidSize)
	case len(spec.Layout) > MaxLayoutLen:
		return 0, fmt.Errorf("mapstore: create %q in %s: layout of %d bytes: %w", name, s.b.Name(), len(spec.Layout), ErrInvalidSize)
	}
	wide := spec.Count >= 1<<32 || spec.ElemSize >= 1<<32
	meta := recMeta(len(name), len(spec.Layout), unique, wide, uint(bits.TrailingZeros64(align)))
	err = s.journaled("create", opInsertName, func() (err error) {
		rec, err = s.h.insert(name, meta, size, spec, init)
		return err
	})
	if err != nil {
		if st := s.state.Load(); st&stClosed != 0 {
			return 0, s.errClosed("create")
		}
		return 0, fmt.Errorf("mapstore: create %q in %s: %w", name, s.b.Name(), s.noteCorrupt(err))
	}
	return rec, nil
}

func (h *heap) insert(name string, meta, size uint64, spec NameSpec, init func([]byte)) (uint64, error) {
	unique := meta>>32&flagUnique != 0
	hash := nameHash(name, unique)
	if so, _, _, _, _, _, _, _ := h.locate(hash, name, unique, nil); so != 0 {
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
	*h.w(uintptr(rec)) = meta | h.recCheck(rec, meta)<<48
	if init != nil {
		init(b[objOff : objOff+size])
	}
	// Publish: the slot, then its control byte (one journaled operation
	// with the rest).
	gb, c, sh, err := h.openSlot(hash)
	if err != nil {
		return 0, err
	}
	if c>>sh&0xff == ctrlTomb {
		h.add(mDirTombs, ^uint64(0))
	}
	h.set(gb+8+uintptr(sh), slotTag(hash)|rec)
	h.set(gb, c&^(0xff<<sh)|ctrlTag(hash)<<sh)
	h.add(mDirCount, 1)
	return rec, nil
}

// openSlot finds where a name of this hash goes in the index: the first
// empty or tombstone slot of its probe. It returns the group's offset,
// its control word and the slot's shift in it (8 times its number).
// reserveSlot has made sure there is one; an index with none is corrupt.
func (h *heap) openSlot(hash uint64) (gb uintptr, c uint64, sh uint, err error) {
	t, gmask := h.get(mDirTable), h.get(mDirCap)-1
	for g, n := hash&gmask, uint64(0); n <= gmask; g, n = (g+1)&gmask, n+1 {
		gb := uintptr(t + g*groupLen)
		c := h.get(gb)
		if free := c & ctrlFree; free != 0 {
			return gb, c, uint(bits.TrailingZeros64(free)) &^ 7, nil
		}
	}
	return 0, 0, 0, corrupt("name index at offset %d has no free slot, though its counters say it has room", t)
}

// reserveSlot makes sure the index has room for one more name, creating
// or rebuilding it.
func (h *heap) reserveSlot() error {
	t, groups, err := h.dirTable()
	if err != nil {
		return err
	}
	count, tombs := h.get(mDirCount), h.get(mDirTombs)
	if count > groups*groupSlots || tombs > groups*groupSlots {
		return corrupt("name directory counts %d names and %d tombstones in an index of %d slots", count, tombs, groups*groupSlots)
	}
	// Up to 7/8 full, and a rebuild leaves it at most half full.
	if t != 0 && (count+tombs+1)*8 <= groups*groupSlots*7 {
		return nil
	}
	ng := uint64(dirMinGroups)
	for (count+1)*2 > ng*groupSlots {
		ng *= 2
	}
	nt, _, err := h.alloc(ng*groupLen, groupLen)
	if err != nil {
		return err
	}
	// The new block is not published yet: fill it without recording.
	idx := unsafe.Slice((*uint64)(unsafe.Add(h.base, nt)), ng*groupLen/8)
	clear(idx)
	for g := range ng {
		idx[g*groupLen/8] = ctrlNew
	}
	h.set(mDirTable, nt)
	h.set(mDirCap, ng)
	h.set(mDirTombs, 0)
	if t == 0 {
		return nil
	}
	limit, moved := h.get(mManaged)<<pageShift, uint64(0)
	for _, v := range h.slots(t, groups) {
		rec := v & slotOffMask
		name, ok := h.recName(rec, limit)
		if moved++; !ok || moved > count {
			return corrupt("name index at offset %d: slot %#x does not hold one of its %d names", t, v, count)
		}
		hash := nameHash(name, h.get(uintptr(rec))>>32&flagUnique != 0)
		gb, c, sh, err := h.openSlot(hash)
		if err != nil {
			return err
		}
		*h.w(gb + 8 + uintptr(sh)) = v
		*h.w(gb) = c&^(0xff<<sh) | ctrlTag(hash)<<sh
	}
	return h.freeAt(t)
}

// slots iterates over the full slots of the index at t (groups groups):
// each slot's offset and value.
func (h *heap) slots(t, groups uint64) iter.Seq2[uintptr, uint64] {
	return func(yield func(uintptr, uint64) bool) {
		for g := range groups {
			gb := uintptr(t + g*groupLen)
			c := h.get(gb)
			for sh := uint(0); sh < 8*groupSlots; sh += 8 {
				if c>>sh&0x80 == 0 && !yield(gb+8+uintptr(sh), h.get(gb+8+uintptr(sh))) {
					return
				}
			}
		}
	}
}

// LookupNamed finds name. It does not allocate. A missing name is
// ErrNotFound.
func (s *Segment) LookupNamed(name string, unique bool) (Named, error) {
	if st := s.state.Load(); st&stUnusable != 0 {
		return Named{}, s.stateErr("find", st)
	}
	rec, meta, obj, count, esize, _, found, err := s.lookupName(name, unique, nil)
	if !found {
		return Named{}, s.notFound("find", name, err)
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
	if st := s.state.Load(); st&stUnusable != 0 {
		return nil, 0, false, s.stateErr("find", st)
	}
	// The common case first, in as few instructions as may be: lookups in
	// a loop then overlap their cache misses. This is lookupName's first
	// try written out, one call less.
	if lw, ok := s.lk.readBegin(); ok {
		_, _, _, off, n, _, exact, st := s.h.locate(nameHash(name, unique), name, unique, layout)
		if st != locTorn && s.lk.readValid(lw) {
			if st == locAbsent {
				return nil, 0, false, s.notFound("find", name, nil)
			}
			return unsafe.Add(s.h.base, off), int64(n), exact, nil
		}
	}
	_, _, off, n, _, exact, found, err := s.lookupName(name, unique, layout)
	if !found {
		return nil, 0, false, s.notFound("find", name, err)
	}
	return unsafe.Add(s.h.base, off), int64(n), exact, nil
}

// lookupName finds name's record and what locate reads of it and, when
// want is not nil, compares the stored layout with want. It reads
// optimistically first: without the lock, then it checks that no writer
// took the lock meanwhile. No locked instruction, so lookups in a loop
// overlap their cache misses. After 4 failed tries (or while a writer
// holds the lock) it reads as read does: under the lock, or in a
// read-only segment optimistically until a read validates. A record that
// does not fit even then is corrupt (err says so).
func (s *Segment) lookupName(name string, unique bool, want []byte) (rec, meta, obj, count, esize uint64, exact, found bool, err error) {
	var st int
	hash := nameHash(name, unique)
	for range 4 {
		lw, ok := s.lk.readBegin()
		if !ok {
			break
		}
		_, rec, meta, obj, count, esize, exact, st = s.h.locate(hash, name, unique, want)
		if st != locTorn && s.lk.readValid(lw) {
			return rec, meta, obj, count, esize, exact, st == locFound, nil
		}
	}
	err = s.read("find", func() error {
		_, rec, meta, obj, count, esize, exact, st = s.h.locate(hash, name, unique, want)
		if st == locTorn {
			return corrupt("the record of name %q at offset %d does not fit the segment", name, rec)
		}
		return nil
	})
	return rec, meta, obj, count, esize, exact, err == nil && st == locFound, err
}

// notFound is the error of a lookup that did not find name: err when the
// lookup failed, ErrClosed when Close overtook it.
func (s *Segment) notFound(op, name string, err error) error {
	if err != nil {
		return err
	}
	if st := s.state.Load(); st&stUnusable != 0 {
		return s.stateErr(op, st)
	}
	return fmt.Errorf("mapstore: %s %q in %s: %w", op, name, s.b.Name(), ErrNotFound)
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
	removed := false
	err := s.journaled("remove", opRemoveName, func() error {
		h := s.h
		so, rec, _, _, _, _, same, st := h.locate(nameHash(name, unique), name, unique, want)
		switch {
		case st == locTorn:
			return corrupt("the record of name %q at offset %d does not fit the segment", name, rec)
		case so == 0:
			return ErrNotFound
		case exact && !same:
			return nil
		case check != nil:
			if err := check(s.namedAt(rec, name)); err != nil {
				return err
			}
		}
		if err := h.unindex(so, rec, true); err != nil {
			return err
		}
		removed = true
		return nil
	})
	switch {
	case err == nil:
		return removed, nil
	case s.state.Load()&stClosed != 0:
		return false, s.errClosed("remove")
	case errors.Is(err, ErrNotFound):
		return false, s.notFound("remove", name, nil)
	case errors.Is(err, ErrCorrupt):
		return false, fmt.Errorf("mapstore: remove %q in %s: %w", name, s.b.Name(), s.noteCorrupt(err))
	}
	return false, err // check's own error, as it gave it
}

// unindex removes the name whose index slot is at so and whose record is
// at rec, and frees the record; the last name frees the index too, in
// the same operation, so that an empty directory holds no memory.
func (h *heap) unindex(so uintptr, rec uint64, freeRec bool) error {
	// In a group with an empty slot the slot can be empty too: every
	// probe that reaches the group ends there. Otherwise other names'
	// probes may pass through it, and it is a tombstone.
	t := h.get(mDirTable)
	gb := so &^ (groupLen - 1)
	c, sh := h.get(gb), uint(so-gb-8)
	mark := uint64(ctrlTomb)
	if ctrlEmpties(c) != 0 {
		mark = ctrlEmpty
	} else {
		h.add(mDirTombs, 1)
	}
	h.set(gb, c&^(0xff<<sh)|mark<<sh)
	h.add(mDirCount, ^uint64(0))
	if freeRec {
		if err := h.freeAt(rec); err != nil {
			return err
		}
	}
	if h.get(mDirCount) == 0 {
		h.set(mDirTable, 0)
		h.set(mDirCap, 0)
		h.set(mDirTombs, 0)
		if err := h.freeAt(t); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	return nil
}

// NamedCount is the number of names in the directory (0 when the
// segment is closed or found corrupt).
func (s *Segment) NamedCount() int {
	var n uint64
	if s.read("count names", func() error { n = s.h.get(mDirCount); return nil }) != nil {
		return 0
	}
	return int(n)
}

// NamedObjects iterates over the directory: a snapshot taken under the
// segment lock, in index order. The loop body may use the segment. A
// closed segment yields nothing; so does a damaged directory, which marks
// the segment corrupt (later calls are ErrCorrupt; CheckSanity says what
// is wrong).
func (s *Segment) NamedObjects() iter.Seq[Named] {
	return func(yield func(Named) bool) {
		var all []Named
		err := s.read("list names", func() error {
			all = all[:0]
			t, groups, err := s.h.dirTable()
			if err != nil || t == 0 {
				return err
			}
			limit := s.h.get(mManaged) << pageShift
			for _, v := range s.h.slots(t, groups) {
				rec := v & slotOffMask
				name, ok := s.h.recName(rec, limit)
				if !ok {
					return corrupt("name index slot %#x points to offset %d, which holds no whole name record", v, rec)
				}
				meta := s.h.get(uintptr(rec))
				obj, count, esize, ok := s.h.view(rec, meta)
				if !ok {
					return corrupt("the record of name %q at offset %d does not fit the segment", name, rec)
				}
				all = append(all, s.named(rec, meta, obj, count, esize, strings.Clone(name)))
			}
			return nil
		})
		if err != nil {
			return
		}
		for _, n := range all {
			if !yield(n) {
				return
			}
		}
	}
}

// checkDirectory is the name directory's part of CheckSanity.
func (h *heap) checkDirectory() error {
	t, groups := h.get(mDirTable), h.get(mDirCap)
	count, tombs := h.get(mDirCount), h.get(mDirTombs)
	if t == 0 {
		if count != 0 || tombs != 0 {
			return corrupt("name directory has no index but counts %d names", count)
		}
		return nil
	}
	if groups < dirMinGroups || groups&(groups-1) != 0 || t%groupLen != 0 {
		return corrupt("name index at %d: %d groups (not a power of two from %d) or not %d-aligned", t, groups, dirMinGroups, groupLen)
	}
	if sz, err := h.blockSize(t); err != nil || sz < groups*groupLen {
		return corrupt("name index at %d (%d groups) is not a live block of its size: %v", t, groups, err)
	}
	var n, tb uint64
	for g := range groups {
		gb := uintptr(t + g*groupLen)
		c := h.get(gb)
		if c>>56 != 0xff {
			return corrupt("name index group %d: control word %#x: the unused byte is not 0xff", g, c)
		}
		for sh := uint(0); sh < 8*groupSlots; sh += 8 {
			switch b := c >> sh & 0xff; {
			case b == ctrlEmpty:
				continue
			case b == ctrlTomb:
				tb++
				continue
			case b&0x80 != 0:
				return corrupt("name index group %d: control byte %#x", g, b)
			}
			n++
			so := gb + 8 + uintptr(sh)
			if err := h.checkRecord(so, c>>sh&0xff); err != nil {
				return err
			}
		}
	}
	if n != count || tb != tombs {
		return corrupt("name index holds %d names and %d tombstones, counters say %d and %d", n, tb, count, tombs)
	}
	if (count+tombs)*8 > groups*groupSlots*7 {
		return corrupt("name index is fuller than 7/8: %d names and %d tombstones in %d slots", count, tombs, groups*groupSlots)
	}
	return nil
}

// checkRecord checks the full slot at so, whose control byte is ct, and
// the record it points to.
func (h *heap) checkRecord(so uintptr, ct uint64) error {
	v := h.get(so)
	rec := v & slotOffMask
	sz, err := h.blockSize(rec)
	if err != nil {
		return corrupt("name index slot at %d: record at %d: %v", so, rec, err)
	}
	meta := h.get(uintptr(rec))
	if meta>>32&0xff&^(flagUnique|flagWide) != 0 || meta>>40&0xff > pageShift || sz < hdrLen(meta) {
		return corrupt("name record at %d: bad flags or alignment in %#x", rec, meta)
	}
	if hl := hdrLen(meta); meta&0xffff+meta>>16&0xffff > sz-hl {
		return corrupt("name record at %d: a %d-byte name and a %d-byte layout do not fit its %d-byte block", rec, meta&0xffff, meta>>16&0xffff, sz)
	}
	if c := h.recCheck(rec, meta); c != meta>>48 {
		return corrupt("name record at %d: check %#04x, its bytes give %#04x", rec, meta>>48, c)
	}
	_, count, esize, ok := h.view(rec, meta)
	hi, osz := bits.Mul64(count, esize)
	if !ok || hi != 0 || objOffset(meta) > sz || osz > sz-objOffset(meta) {
		return corrupt("name record at %d does not fit its %d-byte block", rec, sz)
	}
	name, ok := h.recName(rec, rec+sz)
	if !ok {
		return corrupt("name record at %d: its name runs past its %d-byte block", rec, sz)
	}
	if err := checkName(name); err != nil {
		return corrupt("name record at %d: %v", rec, err)
	}
	hash := nameHash(name, (meta>>32)&flagUnique != 0)
	if slotTag(hash) != v&^slotOffMask || ctrlTag(hash) != ct {
		return corrupt("name record %q at %d: index slot at %d has the wrong hash tag", name, rec, so)
	}
	if so2, _, _ := h.find(name, (meta>>32)&flagUnique != 0); so2 != so {
		return corrupt("name %q in index slot at %d is not found by a lookup", name, so)
	}
	return nil
}
