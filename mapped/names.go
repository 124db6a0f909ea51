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
//	0       8     hash of the name (and its namespace)
//	8       2     name length
//	10      2     layout length
//	12      4     flags (bit 0: unique-instance namespace)
//	16      8     element count
//	24      8     element size
//	32      4     alignment of the object
//	36      4     offset of the object in the block
//	40            name bytes, then the layout blob, then (aligned) the object
//
// Insert and remove are one journaled operation together with the
// allocation or free they go with, so after a crash a name is either
// present with its whole record or absent with its memory free. The index
// is rebuilt into a new block when it fills; the new one is published with
// one word.
const (
	recHeaderLen = 40
	slotEmpty    = 0
	slotTomb     = 1
	slotOffMask  = 1<<48 - 1
	dirMinCap    = 64
	flagUnique   = 1

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

// nameHash is a 64-bit FNV-1a of the namespace and the name, finished
// with a mixer: the same in every process, every run and every build.
func nameHash(name string, unique bool) uint64 {
	h := uint64(14695981039346656037)
	if unique {
		h ^= 0xff
		h *= 1099511628211
	}
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
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

// find probes the index for name; it returns the slot's offset (0 if the
// name is absent) and the record's offset. It reads with atomic loads and
// keeps every read inside the managed memory, so that it is also safe to
// run without the segment lock while a writer changes the directory (see
// LookupNamed): what it finds then is only trusted after validation.
func (h *heap) find(name string, unique bool, hash uint64) (slot uintptr, rec uint64) {
	limit := h.load(mManaged) << pageShift
	t, capa := h.load(mDirTable), h.load(mDirCap)
	if t == 0 || capa == 0 || capa&(capa-1) != 0 || t > limit || capa > (limit-t)/8 {
		return 0, 0
	}
	mask := capa - 1
	tag := slotTag(hash)
	want := uint64(len(name)) | b2u(unique)<<32
	for i, n := hash&mask, uint64(0); n <= mask; i, n = (i+1)&mask, n+1 {
		so := uintptr(t + i*8)
		v := h.load(so)
		if v == slotEmpty {
			return 0, 0
		}
		if v == slotTomb || v&^slotOffMask != tag {
			continue
		}
		r := v & slotOffMask
		if r%8 != 0 || r > limit || uint64(recHeaderLen+len(name)) > limit-r {
			continue
		}
		if h.load(uintptr(r)) != hash || h.load(uintptr(r+8))&(0xffff|flagUnique<<32) != want {
			continue
		}
		if h.equalAt(uintptr(r+recHeaderLen), name) {
			return so, r
		}
	}
	return 0, 0
}

// load reads the word at off with an atomic load: a plain MOV on amd64,
// but one the compiler keeps in order with the loads around it.
func (h *heap) load(off uintptr) uint64 { return atomic.LoadUint64(h.w(off)) }

// equalAt reports whether the bytes at off (8-byte aligned, with room for
// name rounded up to 8 bytes) are name, reading a word at a time.
func (h *heap) equalAt(off uintptr, name string) bool {
	i := 0
	for ; i+8 <= len(name); i += 8 {
		if h.load(off+uintptr(i)) != binary.LittleEndian.Uint64([]byte(name[i:i+8])) {
			return false
		}
	}
	if i == len(name) {
		return true
	}
	var tail [8]byte
	n := copy(tail[:], name[i:])
	mask := uint64(1)<<(8*n) - 1
	return h.load(off+uintptr(i))&mask == binary.LittleEndian.Uint64(tail[:])
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// named describes the record at rec; name is the caller's copy of it.
// Run under the segment lock it cannot fail; run optimistically it
// reports false when the record does not fit in the managed memory (it
// was being changed).
func (s *Segment) named(rec uint64, name string) (Named, bool) {
	h := s.h
	limit := h.load(mManaged) << pageShift
	meta := h.load(uintptr(rec + 8))
	nl, ll := meta&0xffff, (meta>>16)&0xffff
	count, esize := h.load(uintptr(rec+16)), h.load(uintptr(rec+24))
	al := h.load(uintptr(rec + 32))
	obj := rec + al>>32
	hi, size := bits.Mul64(count, esize)
	if hi != 0 || obj > limit || size > limit-obj || rec+recHeaderLen+nl+ll > limit || count > math.MaxInt64 || esize > math.MaxInt64 {
		return Named{}, false
	}
	return Named{
		Name: name, Unique: (meta>>32)&flagUnique != 0, Handle: s.handle(obj),
		Obj:   unsafe.Slice((*byte)(unsafe.Add(h.base, obj)), size),
		Count: int64(count), ElemSize: int64(esize), Align: int(al & 0xffffffff),
		Layout: unsafe.Slice((*byte)(unsafe.Add(h.base, rec+recHeaderLen+nl)), ll),
	}, true
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
	hash := nameHash(name, unique)
	objOff := (recHeaderLen + uint64(len(name)+len(spec.Layout)) + align - 1) &^ (align - 1)
	if err := s.lockW("create", opInsertName); err != nil {
		return Named{}, err
	}
	rec, err := s.h.insert(name, unique, hash, objOff, size, align, spec, init)
	var n Named
	if err == nil {
		n, _ = s.named(rec, name)
	}
	s.unlockW()
	if err != nil {
		return Named{}, fmt.Errorf("mapstore: create %q in %s: %w", name, s.b.Name(), err)
	}
	return n, nil
}

func (h *heap) insert(name string, unique bool, hash, objOff, size, align uint64, spec NameSpec, init func([]byte)) (uint64, error) {
	if so, _ := h.find(name, unique, hash); so != 0 {
		return 0, ErrExists
	}
	if err := h.reserveSlot(); err != nil {
		return 0, err
	}
	rec, usable, err := h.alloc(objOff+size, max(align, 16))
	if err != nil {
		return 0, err
	}
	// The block is new: write it without recording (a rollback frees it).
	b := unsafe.Slice((*byte)(unsafe.Add(h.base, rec)), usable)
	clear(b[:objOff+size])
	*h.w(uintptr(rec)) = hash
	*h.w(uintptr(rec + 8)) = uint64(len(name)) | uint64(len(spec.Layout))<<16 | b2u(unique)<<32
	*h.w(uintptr(rec + 16)) = uint64(spec.Count)
	*h.w(uintptr(rec + 24)) = uint64(spec.ElemSize)
	*h.w(uintptr(rec + 32)) = align | objOff<<32
	copy(b[recHeaderLen:], name)
	copy(b[recHeaderLen+len(name):], spec.Layout)
	if init != nil {
		init(b[objOff : objOff+size])
	}
	// Publish: one word in the index.
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
	if t != 0 && (count+tombs+1)*4 <= capa*3 {
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
		hash := h.get(uintptr(v & slotOffMask))
		j := hash & (ncap - 1)
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
	hash := nameHash(name, unique)
	// Optimistic first: read without the lock, then check that no writer
	// took the lock meanwhile. No locked instruction, so lookups in a loop
	// overlap their cache misses.
	for range 4 {
		v, ok := s.lk.readBegin()
		if !ok {
			break
		}
		_, rec := s.h.find(name, unique, hash)
		var n Named
		if rec != 0 {
			n, ok = s.named(rec, name)
		}
		if ok && s.lk.readValid(v) {
			if rec == 0 {
				return Named{}, s.notFound(name)
			}
			return n, nil
		}
	}
	var n Named
	found := false
	s.lockR(func() {
		if _, rec := s.h.find(name, unique, hash); rec != 0 {
			n, found = s.named(rec, name)
		}
	})
	if !found {
		return Named{}, s.notFound(name)
	}
	return n, nil
}

func (s *Segment) notFound(name string) error {
	return fmt.Errorf("mapstore: find %q in %s: %w", name, s.b.Name(), ErrNotFound)
}

// RemoveNamed removes name and frees its object, as one crash-atomic step.
// check (if not nil) runs first, under the segment lock, and its error
// stops the removal. A missing name is ErrNotFound.
func (s *Segment) RemoveNamed(name string, unique bool, check func(Named) error) error {
	if err := s.lockW("remove", opRemoveName); err != nil {
		return err
	}
	hash := nameHash(name, unique)
	so, rec := s.h.find(name, unique, hash)
	var err error
	switch {
	case so == 0:
		err = s.notFound(name)
	case check != nil:
		n, _ := s.named(rec, name)
		err = check(n)
	}
	if err == nil {
		s.h.set(so, slotTomb)
		s.h.add(mDirCount, ^uint64(0))
		s.h.add(mDirTombs, 1)
		if ferr := s.h.freeAt(rec); ferr != nil {
			err = fmt.Errorf("mapstore: remove %q in %s: %w", name, s.b.Name(), ferr)
		} else if s.h.get(mDirCount) == 0 {
			// The last name: free the index too, in the same operation,
			// so that an empty directory holds no memory.
			t := s.h.get(mDirTable)
			s.h.set(mDirTable, 0)
			s.h.set(mDirCap, 0)
			s.h.set(mDirTombs, 0)
			if ferr := s.h.freeAt(t); ferr != nil {
				err = fmt.Errorf("mapstore: remove %q in %s: index: %w", name, s.b.Name(), ferr)
			}
		}
	}
	s.unlockW()
	return err
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
				nl := s.h.get(uintptr(rec+8)) & 0xffff
				name := string(unsafe.Slice((*byte)(unsafe.Add(s.h.base, rec+recHeaderLen)), nl))
				if n, ok := s.named(rec, name); ok {
					all = append(all, n)
				}
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
		meta := h.get(uintptr(rec + 8))
		nl, ll := meta&0xffff, (meta>>16)&0xffff
		al := h.get(uintptr(rec + 32))
		hi, osz := bits.Mul64(h.get(uintptr(rec+16)), h.get(uintptr(rec+24)))
		if recHeaderLen+nl+ll > al>>32 || hi != 0 || al>>32+osz > sz {
			return corrupt("name record at %d does not fit its %d-byte block", rec, sz)
		}
		name := unsafe.String((*byte)(unsafe.Add(h.base, rec+recHeaderLen)), nl)
		hash := nameHash(name, (meta>>32)&flagUnique != 0)
		if h.get(uintptr(rec)) != hash || slotTag(hash) != v&^slotOffMask {
			return corrupt("name record %q at %d: stored hash does not match", name, rec)
		}
		if so, _ := h.find(name, (meta>>32)&flagUnique != 0, hash); so != uintptr(t+i*8) {
			return corrupt("name %q in index slot %d is not found by a lookup", name, i)
		}
	}
	if n != count || tb != tombs {
		return corrupt("name index holds %d names and %d tombstones, counters say %d and %d", n, tb, count, tombs)
	}
	return nil
}
