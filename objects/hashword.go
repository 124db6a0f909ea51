package objects

import (
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// The word format ('W'): a HashMap's table when K is one 64-bit integer
// and V takes at most 56 bytes (see HashMap). Slots of a key word and its
// value, probed one after another; a lookup reads the slots from its
// key's home on until its key or an empty slot, most often in the one
// cache line that holds the value it returns.
//
// Table block: the removed count, the flags word (wordHas0, wordHasTomb),
// the values of keys 0 and wordTomb (slot-8 bytes each), then, from the
// first 64-byte boundary past those (wordData), the header's slot count N
// (a power of two, at least minWordSlots) of slots of slot bytes each: a
// key word (0: empty, wordTomb: removed, else the key) and the value at
// 8. A key starts at slot wordHome and probes the slots after it in turn,
// wrapping at the table's end, until an empty slot. Full and removed
// slots are at most 3 in 4.

const (
	wordTomb     = 0xa0761d6478bd642f // a removed slot's key word
	wordHas0     = 1                  // flags: key 0 is in the map
	wordHasTomb  = 2                  // flags: key wordTomb is in the map
	minWordSlots = 4
	maxWordSlots = 1 << 40
	maxWordValue = 56 // the largest V the word format takes
)

// wordHome is the first slot of key kw's probe in a table of n slots (a
// power of two): the top log2(n) bits of kw times 2^64 over the golden
// ratio, mod 2^64 (Fibonacci hashing: one multiplication, and keys in a
// run, such as 1, 2, 3, ..., spread as evenly as keys can). Part of the
// format: pinned by TestHashWordLayout.
func wordHome(kw, n uint64) uint64 { return home(kw*0x9e3779b97f4a7c15, n) }

// wordData is the offset of the first slot of the table block at t whose
// slots are slot bytes.
func wordData(t, slot uint64) uint64 { return (t + 2*slot + 63) &^ 63 }

// wordBytes is the size of a table block of n slots of slot bytes: its
// head (2*slot bytes), up to 56 bytes to a 64-byte boundary, its slots.
func wordBytes(n, slot uint64) uint64 { return 2*slot + 56 + n*slot }

// wordMaxFull is how many of n slots may be full or removed: 3 in 4.
func wordMaxFull(n uint64) uint64 { return n - n/4 }

// wordSizeFor is the slot count of a rebuilt table for n keys: the
// smallest power of two, at least minWordSlots, with room for n keys at
// half the greatest load, so that as many insertions again fill it (a
// table that fills up doubles).
func wordSizeFor(seg *mapped.Segment, n uint64) (uint64, error) {
	if n > maxWordSlots/8*3 {
		return 0, fmt.Errorf("mapstore: objects.HashMap.Set in %s: a table for %d keys: too many: %w", seg.Name(), n, mapped.ErrNoSpace)
	}
	s := uint64(minWordSlots)
	for s/8*3 < n {
		s <<= 1
	}
	return s, nil
}

// wordSpecial is key kw's bit in the flags word when it is one of the
// two keys kept in the table's head (0 otherwise).
func wordSpecial(kw uint64) uint64 {
	switch kw {
	case 0:
		return wordHas0
	case wordTomb:
		return wordHasTomb
	}
	return 0
}

// wordFits reports whether a word table block at t of n slots of slot
// bytes lies in seg (n a power of two).
func wordFits(seg *mapped.Segment, t, n, slot uint64) bool {
	return n != 0 && n&(n-1) == 0 && n <= maxWordSlots && t%8 == 0 && t >= seg.BlockStart() && seg.Holds(t, wordBytes(n, slot))
}

// slotAt is slot i of the table whose slots start at d.
func (o *hashOp[K, V]) slotAt(d, i uint64) *uint64 { return (*uint64)(o.at(d + i*o.slot)) }

// flags is the table's flags word.
func (o *hashOp[K, V]) flags() *uint64 { return (*uint64)(o.at(o.h.table + 8)) }

// headVal is the value of special key bit (wordHas0, wordHasTomb) in the
// table block at t.
func (o *hashOp[K, V]) headVal(t, bit uint64) unsafe.Pointer {
	return o.at(t + 16 + (bit-1)*(o.slot-8))
}

// wordFlags is the table's flags word, checked.
func (o *hashOp[K, V]) wordFlags() (uint64, error) {
	f := *o.flags()
	if f > wordHas0|wordHasTomb {
		return 0, o.corrupt("the table at offset %d has flags %#x", o.h.table, f)
	}
	return f, nil
}

// wordCounts checks the table's counts: its keys (n) and removed slots.
func (o *hashOp[K, V]) wordCounts() (removed uint64, err error) {
	r, n := *o.removed(), o.h.n
	if r > o.h.groups || n > o.h.groups+2 || n+r > o.h.groups+2 {
		return 0, o.corrupt("the table at offset %d of %d slots says %d keys and %d slots removed", o.h.table, o.h.groups, n, r)
	}
	return r, nil
}

// wordFind probes for key kw (not special): the slot holding it (found);
// else free, the first removed slot on its probe or else the empty one
// that ends it (-1: neither, every slot is full or removed).
func (o *hashOp[K, V]) wordFind(kw uint64) (at uint64, found bool, free int64) {
	t, n := o.h.table, o.h.groups
	if t == 0 {
		return 0, false, -1
	}
	d := wordData(t, o.slot)
	free = -1
	i := wordHome(kw, n)
	for p := n; p > 0; p-- {
		switch *o.slotAt(d, i) {
		case kw:
			return i, true, free
		case 0:
			if free < 0 {
				free = int64(i)
			}
			return 0, false, free
		case wordTomb:
			if free < 0 {
				free = int64(i)
			}
		}
		i = (i + 1) & (n - 1)
	}
	return 0, false, free
}

// wordGet is get for the word format: the value of kw, or nil.
func (o *hashOp[K, V]) wordGet(kw uint64) (unsafe.Pointer, error) {
	if o.h.table == 0 {
		return nil, nil
	}
	if bit := wordSpecial(kw); bit != 0 {
		f, err := o.wordFlags()
		if err != nil || f&bit == 0 {
			return nil, err
		}
		return o.headVal(o.h.table, bit), nil
	}
	at, found, _ := o.wordFind(kw)
	if !found {
		return nil, nil
	}
	return o.at(wordData(o.h.table, o.slot) + at*o.slot + 8), nil
}

// wordPut is put for the word format, its table checked.
func (o *hashOp[K, V]) wordPut(method string, kw uint64, v *V, overwrite bool) (*V, bool, error) {
	h := o.h
	found := func(p unsafe.Pointer) (*V, bool, error) {
		if !overwrite {
			return (*V)(p), false, nil
		}
		shape, _, err := shapeFor[V]()
		if err != nil {
			return nil, false, err
		}
		return (*V)(p), false, o.replace(method, p, v, shape)
	}
	if bit := wordSpecial(kw); bit != 0 {
		if h.table == 0 {
			if err := o.wordRebuild(minWordSlots); err != nil {
				return nil, false, err
			}
		}
		f, err := o.wordFlags()
		if err != nil {
			return nil, false, err
		}
		p := o.headVal(h.table, bit)
		if f&bit != 0 {
			return found(p)
		}
		if _, err := o.wordCounts(); err != nil {
			return nil, false, err
		}
		return o.wordInsert(p, o.flags(), f|bit, false, v)
	}
	for try := 0; ; try++ {
		at, ok, free := o.wordFind(kw)
		d := wordData(h.table, o.slot)
		if ok {
			return found(o.at(d + at*o.slot + 8))
		}
		// A removed slot is reused as it is; an empty one only while full
		// and removed slots stay within 3 in 4 (else the table is rebuilt
		// first: without removed slots, and larger if it holds many keys).
		if free >= 0 {
			r, err := o.wordCounts()
			if err != nil {
				return nil, false, err
			}
			kp := o.slotAt(d, uint64(free))
			if *kp == wordTomb {
				if r == 0 {
					return nil, false, o.corrupt("the table at offset %d has a removed slot at %d and counts none", h.table, d+uint64(free)*o.slot)
				}
				return o.wordInsert(unsafe.Add(unsafe.Pointer(kp), 8), kp, kw, true, v)
			}
			if h.n+r < wordMaxFull(h.groups) {
				return o.wordInsert(unsafe.Add(unsafe.Pointer(kp), 8), kp, kw, false, v)
			}
		}
		if try > 0 {
			return nil, false, o.corrupt("no free slot after a rebuild")
		}
		// The counts, checked before the rebuild: one sized from a bad
		// count would grow the segment by as much as the count says.
		if h.table == 0 && h.n != 0 {
			return nil, false, o.corrupt("no table, and %d keys", h.n)
		}
		if h.table != 0 {
			if _, err := o.wordCounts(); err != nil {
				return nil, false, err
			}
		}
		n, err := wordSizeFor(o.seg, h.n)
		if err != nil {
			return nil, false, err
		}
		if err := o.wordRebuild(n); err != nil {
			return nil, false, err
		}
	}
}

// wordInsert puts *v (or zero) at p, a free value's place, and publishes
// it in a lane: the word at w (a slot's key, or the flags) becomes nw and
// the count grows (and the removed count falls, for a removed slot).
func (o *hashOp[K, V]) wordInsert(p unsafe.Pointer, w *uint64, nw uint64, removed bool, v *V) (*V, bool, error) {
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return nil, false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	// The place is free: the value is written now, unseen until w is set.
	if v != nil {
		copy(unsafe.Slice((*byte)(p), o.vs), unsafe.Slice((*byte)(unsafe.Pointer(v)), o.vs))
	} else {
		clear(unsafe.Slice((*byte)(p), o.vs))
	}
	if err = o.publish(&l, w, nw, true, removed); err != nil {
		l.Abort()
		return nil, false, o.laneErr("Set", err)
	}
	if err := l.Commit(); err != nil {
		return nil, false, err
	}
	return (*V)(p), true, nil
}

// wordRebuild moves every entry to a new table of n slots, in a lane, as
// rebuild does: the new table is built in a new block (its head's
// entries copied, every other key hashed again and placed at the first
// empty slot of its probe), published with the header, and the old block
// freed after the commit.
func (o *hashOp[K, V]) wordRebuild(n uint64) error {
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	fail := func(err error) error {
		l.Abort()
		return o.laneErr("Set", err)
	}
	h, slot := o.h, o.slot
	var f uint64
	if h.table != 0 {
		if f, err = o.wordFlags(); err != nil {
			return fail(err)
		}
	}
	if err := l.Save(unsafe.Pointer(h), int(unsafe.Sizeof(*h))); err != nil {
		return fail(err)
	}
	blk, err := l.Allocate(int(wordBytes(n, slot)))
	if err != nil {
		return fail(fmt.Errorf("mapstore: objects.HashMap: a table of %d slots of %d bytes: %w", n, slot, err))
	}
	nt := offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	nd := wordData(nt, slot)
	for i := range n { // every slot empty; their values are not read
		*o.slotAt(nd, i) = 0
	}
	*(*uint64)(o.at(nt)) = 0 // no slot removed
	*(*uint64)(o.at(nt + 8)) = f
	moved := uint64(bits.OnesCount64(f))
	if old := h.table; old != 0 {
		copy(unsafe.Slice((*byte)(o.at(nt+16)), 2*(slot-8)), unsafe.Slice((*byte)(o.at(old+16)), 2*(slot-8)))
		od := wordData(old, slot)
		for i := range h.groups {
			s := o.slotAt(od, i)
			kw := *s
			if kw == 0 || kw == wordTomb {
				continue
			}
			if moved-uint64(bits.OnesCount64(f)) == wordMaxFull(n) {
				return fail(o.corrupt("the table holds more keys than the header's %d", h.n))
			}
			// The first empty slot on its probe (one exists: fewer keys
			// than slots were placed so far).
			j := wordHome(kw, n)
			for *o.slotAt(nd, j) != 0 {
				j = (j + 1) & (n - 1)
			}
			copy(unsafe.Slice((*byte)(unsafe.Pointer(o.slotAt(nd, j))), slot), unsafe.Slice((*byte)(unsafe.Pointer(s)), slot))
			moved++
		}
		if err := o.retire(&l, old, moved); err != nil {
			return fail(err)
		}
	}
	h.table, h.groups, h.n = nt, n, moved
	return l.Commit()
}

// wordDelete is Delete for the word format, its table checked: the slot
// of kw is left empty when the one after it is (no probe goes past it to
// a key), removed otherwise; a key in the head clears its flag.
func (o *hashOp[K, V]) wordDelete(kw uint64) (bool, error) {
	h := o.h
	if h.table == 0 {
		return false, nil
	}
	var w *uint64 // the word that says the key is there
	var nw uint64 // what it says once it is not
	var p unsafe.Pointer
	tomb := false
	if bit := wordSpecial(kw); bit != 0 {
		f, err := o.wordFlags()
		if err != nil || f&bit == 0 {
			return false, err
		}
		w, nw, p = o.flags(), f&^bit, o.headVal(h.table, bit)
	} else {
		at, found, _ := o.wordFind(kw)
		if !found {
			return false, nil
		}
		d := wordData(h.table, o.slot)
		w, p = o.slotAt(d, at), o.at(d+at*o.slot+8)
		if *o.slotAt(d, (at+1)&(h.groups-1)) != 0 {
			nw, tomb = wordTomb, true
		}
	}
	if _, err := o.wordCounts(); err != nil {
		return false, err
	}
	if h.n == 0 {
		return false, o.corrupt("the table at offset %d holds a key and counts none", h.table)
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return false, err
	}
	var l mapped.Lane
	err = l.Begin(o.seg)
	if err != nil {
		return false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	err = o.publish(&l, w, nw, false, tomb)
	if err == nil {
		err = l.Drop(p, 1, int(o.vs), shape)
	}
	if err != nil {
		l.Abort()
		return false, o.laneErr("Delete", err)
	}
	return true, l.Commit()
}

// wordAll is All for the word format: the keys in the head, then the
// slots in order.
func (o *hashOp[K, V]) wordAll(yield func(K, *V) bool) {
	t := o.h.table
	if t == 0 {
		return
	}
	f, err := o.wordFlags()
	if err != nil {
		panic(err)
	}
	for _, kw := range [2]uint64{0, wordTomb} {
		if bit := wordSpecial(kw); f&bit != 0 && !yield(*(*K)(unsafe.Pointer(&kw)), (*V)(o.headVal(t, bit))) {
			return
		}
	}
	d := wordData(t, o.slot)
	for i := range o.h.groups {
		s := o.slotAt(d, i)
		if kw := *s; kw != 0 && kw != wordTomb && !yield(*(*K)(unsafe.Pointer(&kw)), (*V)(unsafe.Add(unsafe.Pointer(s), 8))) {
			return
		}
	}
}

// putWord is put's straight path for the word format, as Get's: a key
// already there (unless overwrite) or a new key whose probe ends at an
// empty slot, with no removed slot before it, in a table with room.
// Anything else (no table, a key kept in the head, a replacement, a
// removed slot, a rebuild, a read-only or closed open, misuse, damage) is
// done false, and the general path does it and says what went wrong.
func (h *HashMap[K, V]) putWord(k K, v *V, overwrite bool) (*V, bool, bool, error) {
	seg := mapped.SegmentAt(unsafe.Pointer(h))
	key := keyOf((*HashMap[K, V])(nil))
	e := recentHashGeos[uintptr(key)>>4%uintptr(len(recentHashGeos))].Load()
	if seg == nil || e == nil || e.key != key || !e.g.word || !seg.CanChange() {
		return nil, false, false, nil
	}
	kw := *(*uint64)(unsafe.Pointer(&k))
	t, n, slot := h.table, h.groups, e.g.slot
	if t == 0 || kw == 0 || kw == wordTomb || !wordFits(seg, t, n, slot) {
		return nil, false, false, nil
	}
	base := unsafe.Add(seg.Base(), wordData(t, slot))
	i := wordHome(kw, n)
	for p := n; p > 0; p-- {
		s := unsafe.Add(base, i*slot)
		switch *(*uint64)(s) {
		case kw:
			if overwrite {
				return nil, false, false, nil
			}
			return (*V)(unsafe.Add(s, 8)), false, true, nil
		case 0:
			r := *(*uint64)(unsafe.Add(seg.Base(), t))
			if r > n || h.n > n+2 || h.n+r >= wordMaxFull(n) {
				return nil, false, false, nil
			}
			o := hashOp[K, V]{
				mapOp:   mapOp[K, V]{seg: seg, g: e.g.mapGeo, base: seg.Base(), self: unsafe.Pointer(h), typ: hashMapName},
				hashGeo: &e.g, h: h,
			}
			p, inserted, err := o.wordInsert(unsafe.Add(s, 8), (*uint64)(s), kw, false, v)
			return p, inserted, true, err
		case wordTomb:
			return nil, false, false, nil
		}
		i = (i + 1) & (n - 1)
	}
	return nil, false, false, nil
}
