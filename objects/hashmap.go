package objects

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math"
	"math/bits"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// HashMap is an unordered map from K to V that lives in a segment: an
// open-addressing table in one block, with a control byte per slot
// probed a group of 8 at a time (in the manner of a Swiss table), and a
// stable hash (the same in every process, every run and every build:
// part of the segment's format). Keys are as Map's (integers, floats with
// NaN refused and -0 equal to 0, fixed-size arrays of those, or strings
// looked up by Go string without allocating); values are any plain data,
// containers included. Its zero value is an empty map.
//
// Values live in the table, in place: Get and GetOrInsert return a
// pointer valid until the next insertion (one may move the table) or
// removal of that key. Every mutating call is crash-atomic: an insertion
// writes the key and value into a free slot, unseen, then sets the
// slot's control byte, the count and the growth word in a lane that
// saved them first (a rollback puts them back); a removal marks the slot
// free and frees what the entry owns after its lane commits; a resize
// builds the whole new table in a new block and publishes it with the
// header. Like a Go map it is not safe for concurrent mutation.
//
// Header (24 bytes): the table's offset (0: none), the number of keys,
// the number of slots S (a multiple of 8, not a power of two: a table is
// sized for its keys). The table block: S/8 groups, then a word: how
// many more empty slots insertions may fill before the table is rebuilt
// (at most 7 in 8 slots are full or removed). A group is a word of 8
// control bytes (little-endian: slot j's is bits 8j to 8j+7), then its 8
// slots (a slot: the key, then the value at the key's size rounded up to
// 8 bytes, rounded up to 8 bytes). A control byte is 0 for an empty
// slot, 1 for a removed one, and 0x80 | the hash's low 7 bits for a full
// one. A key with hash x starts at group x*(S/8)>>64 (the high word of
// the product) and probes the groups after it in turn, wrapping at the
// table's end, until a group with an empty slot. A removal leaves a slot empty when
// its group has an empty slot already (no probe went past it), removed
// otherwise.
type HashMap[K comparable, V any] struct {
	table uint64
	n     uint64
	slots uint64
}

const (
	hashMapName = "HashMap"
	ctrlEmpty   = 0x00
	ctrlRemoved = 0x01
	ctrlFull    = 0x80 // | the hash's low 7 bits
	groupSlots  = 8
	maxSlots    = 1 << 40
	bytesLo     = 0x0101010101010101 // a group's bytes' low bits
	bytesHi     = 0x8080808080808080 // and high bits
)

// zeroBytes has the high bit of each zero byte of x set, and no other
// bit: exact (the borrow-based trick is not, and an empty slot must not
// be imagined).
func zeroBytes(x uint64) uint64 {
	return ^((x&^bytesHi + ^uint64(bytesHi)) | x | ^uint64(bytesHi)) & bytesHi
}

// badCtrl is non-zero when a group's word w has a control byte that is
// neither empty, removed nor full.
func badCtrl(w uint64) uint64 { return w & ((^w & bytesHi >> 7) * 0x7e) }

// withByte is w with byte j replaced by c.
func withByte(w uint64, j uint64, c byte) uint64 {
	return w&^(0xff<<(8*j)) | uint64(c)<<(8*j)
}

func (HashMap[K, V]) containerKind() byte         { return 'G' } // 'H': the previous format
func (HashMap[K, V]) containerElem() reflect.Type { return reflect.TypeFor[V]() }
func (HashMap[K, V]) mapKey() reflect.Type        { return reflect.TypeFor[K]() }
func (HashMap[K, V]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return sh
	}
	slot, valOff := hashSlot(g)
	return sh.HashTable(off, slot, 0, valOff, g.keyShape, elem)
}

// hashSlot is a slot's size and its value's offset.
func hashSlot(g *mapGeo) (slot, valOff uintptr) {
	return g.ks + (g.vs+7)&^7, g.ks
}

// tableBytes is the size of a table block of s slots of slot bytes.
func tableBytes(s, slot uint64) uint64 { return s*slot + s + 8 }

// hashGeo is how a HashMap[K, V]'s table is laid out: its keys as
// Map's, slot bytes, the value's offset in a slot, bytes per group (its
// control word and slots).
type hashGeo struct {
	*mapGeo
	slot, valOff, group uint64
	word                bool // K is one 8-byte integer: hashed and compared as a word
}

// recentHashGeos is a small direct-mapped cache of hashGeos, keyed by the
// type word of *HashMap[K, V], as recentGeos is for Map.
var recentHashGeos [64]atomic.Pointer[hashGeoEntry]

type hashGeoEntry struct {
	key unsafe.Pointer
	g   hashGeo
}

func hashGeoOf[K comparable, V any]() (*hashGeo, error) {
	key := keyOf((*HashMap[K, V])(nil))
	if e := recentHashGeos[uintptr(key)>>4%uintptr(len(recentHashGeos))].Load(); e != nil && e.key == key {
		return &e.g, nil
	}
	return hashGeoSlow[K, V](key)
}

func hashGeoSlow[K comparable, V any](key unsafe.Pointer) (*hashGeo, error) {
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return nil, err
	}
	slot, valOff := hashSlot(g)
	e := &hashGeoEntry{key, hashGeo{
		mapGeo: g, slot: uint64(slot), valOff: uint64(valOff), group: 8 + groupSlots*uint64(slot),
		word: !g.str && g.count == 1 && g.esize == 8 && (g.kind == kInt64 || g.kind == kUint64),
	}}
	recentHashGeos[uintptr(key)>>4%uintptr(len(recentHashGeos))].Store(e)
	return &e.g, nil
}

// hashOp is one call's view of a hash map.
type hashOp[K comparable, V any] struct {
	mapOp[K, V]
	*hashGeo
	h *HashMap[K, V]
}

func (h *HashMap[K, V]) op(method string) (hashOp[K, V], error) {
	seg := segFor(unsafe.Pointer(h), hashMapName, method)
	hg, err := hashGeoOf[K, V]()
	if err != nil {
		return hashOp[K, V]{}, fmt.Errorf("mapstore: objects.HashMap.%s: %w", method, err)
	}
	return hashOp[K, V]{
		mapOp:   mapOp[K, V]{seg: seg, g: hg.mapGeo, base: seg.Base(), self: unsafe.Pointer(h), typ: hashMapName},
		hashGeo: hg, h: h,
	}, nil
}

// tableFits reports whether a table at t of n slots of slot bytes lies
// in seg.
func tableFits(seg *mapped.Segment, t, n, slot uint64) bool {
	return n != 0 && n%groupSlots == 0 && n <= maxSlots && t%8 == 0 && seg.Holds(t, tableBytes(n, slot))
}

// tableOK checks the header against the segment: the table block holds
// its groups and growth word.
func (o *hashOp[K, V]) tableOK() error {
	if t, n := o.h.table, o.h.slots; t != 0 && !tableFits(o.seg, t, n, o.slot) {
		return o.corrupt("a table at offset %d of %d slots of %d bytes, outside the segment", t, n, o.slot)
	}
	return nil
}

// slotAt is slot i of the table at t.
func (o *hashOp[K, V]) slotAt(t, i uint64) unsafe.Pointer {
	return o.at(t + i/groupSlots*o.group + 8 + i%groupSlots*o.slot)
}

// ctrlOff is the offset of the table's group g's control word.
func (o *hashOp[K, V]) ctrlOff(g uint64) uint64 { return o.h.table + g*o.group }

// growth is the table's growth word: the empty slots insertions may
// still fill.
func (o *hashOp[K, V]) growth() *uint64 {
	return (*uint64)(o.at(o.h.table + o.h.slots/groupSlots*o.group))
}

// Hashing: stable, in every process, run and build.

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// hashBytes hashes b a word at a time.
func hashBytes(b []byte) uint64 {
	h := uint64(len(b))*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d
	for len(b) >= 8 {
		h = mix64(h ^ binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	if len(b) > 0 {
		var t [8]byte
		copy(t[:], b)
		h = mix64(h ^ binary.LittleEndian.Uint64(t[:]) ^ uint64(len(b))<<59)
	}
	return mix64(h)
}

// hashFixed hashes a fixed-size key of g's kind: element by element, a
// float's -0 as 0 (they are equal keys).
func (g *mapGeo) hashFixed(k unsafe.Pointer) uint64 {
	h := uint64(g.count) * 0x9e3779b97f4a7c15
	for i := range g.count {
		p := unsafe.Add(k, uintptr(i)*g.esize)
		var v uint64
		switch g.kind {
		case kInt8, kUint8:
			v = uint64(*(*uint8)(p))
		case kInt16, kUint16:
			v = uint64(*(*uint16)(p))
		case kInt32, kUint32:
			v = uint64(*(*uint32)(p))
		case kFloat32:
			f := *(*float32)(p)
			if f == 0 {
				f = 0
			}
			v = uint64(math.Float32bits(f))
		case kFloat64:
			f := *(*float64)(p)
			if f == 0 {
				f = 0
			}
			v = math.Float64bits(f)
		default:
			v = *(*uint64)(p)
		}
		h = mix64(h ^ v)
	}
	return h
}

// hashOf is k's hash.
func (o *hashOp[K, V]) hashOf(k *K) uint64 {
	if o.word {
		return mix64(0x9e3779b97f4a7c15 ^ *(*uint64)(unsafe.Pointer(k))) // hashFixed's, for one word
	}
	if o.g.str {
		s := *(*string)(unsafe.Pointer(k))
		return hashBytes(unsafe.Slice(unsafe.StringData(s), len(s)))
	}
	return o.g.hashFixed(unsafe.Pointer(k))
}

// hashAt is the hash of the key in the slot at s (a rebuild's).
func (o *hashOp[K, V]) hashAt(s unsafe.Pointer) (uint64, error) {
	if o.g.str {
		b, err := o.slotBytes(s)
		if err != nil {
			return 0, err
		}
		return hashBytes(b), nil
	}
	return o.hashOf((*K)(s)), nil
}

// keyEq reports whether the key in the slot at s is k.
func (o *hashOp[K, V]) keyEq(s unsafe.Pointer, k *K) (bool, error) {
	if o.word {
		return *(*uint64)(s) == *(*uint64)(unsafe.Pointer(k)), nil
	}
	c, err := o.cmpKey(s, k)
	return c == 0, err
}

// home is the group a hash starts its probe at, of groups.
func home(hv, groups uint64) uint64 {
	g, _ := bits.Mul64(hv, groups)
	return g
}

// find probes for k (hash hv): the slot holding it (found); else free,
// the first empty or removed slot on its probe sequence (-1: none, every
// slot is full).
func (o *hashOp[K, V]) find(k *K, hv uint64) (at uint64, found bool, free int64, err error) {
	t, n := o.h.table, o.h.slots
	free = -1
	if t == 0 {
		return 0, false, -1, nil
	}
	groups := n / groupSlots
	tag := bytesLo * (ctrlFull | hv&0x7f)
	g := home(hv, groups)
	for p := uint64(0); p < groups; p++ {
		w := *(*uint64)(o.at(t + g*o.group))
		if badCtrl(w) != 0 {
			return 0, false, 0, o.corrupt("the control word at offset %d says %#x", t+g*o.group, w)
		}
		for m := zeroBytes(w ^ tag); m != 0; m &= m - 1 {
			i := g*groupSlots + uint64(bits.TrailingZeros64(m))>>3
			eq, err := o.keyEq(o.slotAt(t, i), k)
			if err != nil {
				return 0, false, 0, err
			}
			if eq {
				return i, true, free, nil
			}
		}
		if m := ^w & bytesHi; m != 0 && free < 0 {
			free = int64(g*groupSlots + uint64(bits.TrailingZeros64(m))>>3)
		}
		if zeroBytes(w) != 0 {
			return 0, false, free, nil
		}
		if g++; g == groups {
			g = 0
		}
	}
	return 0, false, free, nil
}

// Len is the number of keys.
func (h *HashMap[K, V]) Len() int {
	seg := segFor(unsafe.Pointer(h), hashMapName, "Len")
	if h.table == 0 {
		return 0
	}
	if h.n > h.slots {
		panic(damaged(seg, hashMapName, unsafe.Pointer(h), "%d keys in %d slots", h.n, h.slots))
	}
	return int(h.n)
}

// findWord is find for a one-word integer key k in the table at t (in
// the segment at base) of n slots in groups of group bytes, which fits
// the segment: k's slot, or nil; bad is the offset of a control word
// that is neither empty, removed nor full, met on a probe that did not
// find k (else 0).
func findWord(base unsafe.Pointer, t, n, group, k uint64) (s unsafe.Pointer, bad uint64) {
	hv := mix64(0x9e3779b97f4a7c15 ^ k) // hashFixed's, for one word
	groups := n / groupSlots
	tag := bytesLo * (ctrlFull | hv&0x7f)
	g := home(hv, groups)
	for p := groups; p > 0; p-- {
		grp := unsafe.Add(base, t+g*group)
		w := *(*uint64)(grp)
		for m := zeroBytes(w ^ tag); m != 0; m &= m - 1 {
			s := unsafe.Add(grp, 8+uint64(bits.TrailingZeros64(m))>>3*((group-8)/groupSlots))
			if *(*uint64)(s) == k {
				return s, 0
			}
		}
		if badCtrl(w) != 0 {
			return nil, t + g*group
		}
		if zeroBytes(w) != 0 {
			return nil, 0
		}
		if g++; g == groups {
			g = 0
		}
	}
	return nil, 0
}

// Get returns a pointer to k's value, in place, and whether k is there.
func (h *HashMap[K, V]) Get(k K) (*V, bool) {
	seg := mapped.SegmentAt(unsafe.Pointer(h))
	hg, err := hashGeoOf[K, V]()
	if seg != nil && err == nil && hg.word {
		t, n := h.table, h.slots
		if t == 0 {
			return nil, false
		}
		if tableFits(seg, t, n, hg.slot) {
			s, bad := findWord(seg.Base(), t, n, hg.group, *(*uint64)(unsafe.Pointer(&k)))
			if s != nil {
				return (*V)(unsafe.Add(s, 8)), true
			}
			if bad == 0 {
				return nil, false
			}
		}
	}
	return h.get(k)
}

// get is Get the general way (which panics with the misuse or the
// corruption that the fast path saw).
func (h *HashMap[K, V]) get(k K) (*V, bool) {
	o, err := h.op("Get")
	if err != nil {
		panic(err)
	}
	if err := o.tableOK(); err != nil {
		panic(err)
	}
	if h.table == 0 || o.g.isNaN(unsafe.Pointer(&k)) {
		return nil, false
	}
	at, found, _, err := o.find(&k, o.hashOf(&k))
	if err != nil {
		panic(err)
	}
	if !found {
		return nil, false
	}
	return (*V)(unsafe.Add(o.slotAt(h.table, uint64(at)), o.valOff)), true
}

// Has reports whether k is in the map.
func (h *HashMap[K, V]) Has(k K) bool {
	_, ok := h.Get(k)
	return ok
}

// Set makes k's value v (what an old value owns is freed).
func (h *HashMap[K, V]) Set(k K, v V) error {
	_, _, err := h.put("Set", k, &v, true)
	return err
}

// GetOrInsert returns a pointer to k's value, inserting a zero value
// first if k is absent; inserted says which.
func (h *HashMap[K, V]) GetOrInsert(k K) (v *V, inserted bool, err error) {
	return h.put("GetOrInsert", k, nil, false)
}

func (h *HashMap[K, V]) put(method string, k K, v *V, overwrite bool) (*V, bool, error) {
	o, err := h.op(method)
	if err != nil {
		return nil, false, err
	}
	if err := writable(o.seg, hashMapName, method); err != nil {
		return nil, false, err
	}
	if err := o.checkKey(method, &k); err != nil {
		return nil, false, err
	}
	if err := o.tableOK(); err != nil {
		return nil, false, err
	}
	hv := o.hashOf(&k)
	for try := 0; ; try++ {
		at, found, free, err := o.find(&k, hv)
		if err != nil {
			return nil, false, err
		}
		if found {
			p := unsafe.Add(o.slotAt(h.table, at), o.valOff)
			if !overwrite {
				return (*V)(p), false, nil
			}
			shape, _, err := shapeFor[V]()
			if err != nil {
				return nil, false, err
			}
			return (*V)(p), false, o.replace(method, p, v, shape)
		}
		// A removed slot is reused as it is; an empty one only while the
		// growth word allows (else the table is rebuilt first: without
		// removed slots, and larger if it holds many keys).
		if free >= 0 {
			c := *(*byte)(o.at(o.ctrlOff(uint64(free)/groupSlots) + uint64(free)%groupSlots))
			if c == ctrlRemoved {
				return o.insertAt(uint64(free), &k, hv, v, false)
			}
			if gw := *o.growth(); gw > h.slots {
				return nil, false, o.corrupt("the growth word of the table at offset %d says %d, of %d slots", h.table, gw, h.slots)
			} else if gw > 0 {
				return o.insertAt(uint64(free), &k, hv, v, true)
			}
		}
		if try > 0 {
			return nil, false, o.corrupt("no free slot after a rebuild")
		}
		slots, err := o.sizeFor(h.n + 1)
		if err != nil {
			return nil, false, err
		}
		if err := o.rebuild(slots); err != nil {
			return nil, false, err
		}
	}
}

// maxFull is how many of s slots may be full or removed: 7 in 8.
func maxFull(s uint64) uint64 { return s / groupSlots * 7 }

// sizeFor is the slot count of a rebuilt table for n keys: twice as many
// as it may hold full, in whole groups, so that at least n more
// insertions fill it (a rebuild's cost, spread over them, is constant).
func (o *hashOp[K, V]) sizeFor(n uint64) (uint64, error) {
	groups := (2*n + 6) / 7
	if n > maxSlots/4 || groups*groupSlots > maxSlots {
		return 0, fmt.Errorf("mapstore: objects.HashMap.Set in %s: a table for %d keys: too many", o.seg.Name(), n)
	}
	return max(groups, 1) * groupSlots, nil
}

// insertAt puts k (hash hv) and *v (or zero) in free slot i (an empty
// one if empty, which takes one from the growth word).
func (o *hashOp[K, V]) insertAt(i uint64, k *K, hv uint64, v *V, empty bool) (*V, bool, error) {
	l, err := o.seg.BeginLane()
	if err != nil {
		return nil, false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	b := builder[K, V]{o: &o.mapOp, l: &l}
	s := o.slotAt(o.h.table, i)
	slot, err := b.makeSlot(&b.buf[0], k)
	if err == nil {
		// The slot is free: its key and value are written now, unseen
		// until its control byte is published after the commit.
		copy(unsafe.Slice((*byte)(s), o.g.ks), unsafe.Slice((*byte)(slot), o.g.ks))
		p := unsafe.Add(s, o.valOff)
		if v != nil {
			copy(unsafe.Slice((*byte)(p), o.g.vs), unsafe.Slice((*byte)(unsafe.Pointer(v)), o.g.vs))
		} else {
			clear(unsafe.Slice((*byte)(p), o.g.vs))
		}
		cw := (*uint64)(o.at(o.ctrlOff(i / groupSlots)))
		err = saveSet(&l, cw, withByte(*cw, i%groupSlots, byte(ctrlFull|hv&0x7f)))
		if err == nil {
			err = saveSet(&l, &o.h.n, o.h.n+1)
		}
		if err == nil && empty {
			gw := o.growth()
			err = saveSet(&l, gw, *gw-1)
		}
	}
	if err != nil {
		l.Abort()
		return nil, false, o.laneErr("Set", err)
	}
	if err := l.Commit(); err != nil {
		return nil, false, err
	}
	return (*V)(unsafe.Add(s, o.valOff)), true, nil
}

// saveSet sets the word at p to v in lane l, now: a rollback puts it
// back. (A store left to the commit costs the redo's check of its
// target's page; a saved word is checked where it is saved.)
func saveSet(l *mapped.Lane, p *uint64, v uint64) error {
	if err := l.Save(unsafe.Pointer(p), 8); err != nil {
		return err
	}
	*p = v
	return nil
}

// rebuild moves every entry to a new table of slots slots, in a lane: the
// new table is built in a new block, then published with the header; the
// old block is freed after the commit (the entries' keys and values move
// with their bytes; each key is hashed again).
func (o *hashOp[K, V]) rebuild(slots uint64) error {
	l, err := o.seg.BeginLane()
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	fail := func(err error) error {
		l.Abort()
		return o.laneErr("Set", err)
	}
	h := o.h
	if err := l.Save(unsafe.Pointer(h), int(unsafe.Sizeof(*h))); err != nil {
		return fail(err)
	}
	blk, err := l.Allocate(int(tableBytes(slots, o.slot)))
	if err != nil {
		return fail(fmt.Errorf("mapstore: objects.HashMap: a table of %d slots: %w", slots, err))
	}
	nt := offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	groups := slots / groupSlots
	for g := range groups { // every slot empty; their bytes are not read
		*(*uint64)(o.at(nt + g*o.group)) = 0
	}
	moved := uint64(0)
	if old := h.table; old != 0 {
		for og := range h.slots / groupSlots {
			w := *(*uint64)(o.at(old + og*o.group))
			if badCtrl(w) != 0 {
				return fail(o.corrupt("the control word at offset %d says %#x", old+og*o.group, w))
			}
			for m := w & bytesHi; m != 0; m &= m - 1 {
				s := o.slotAt(old, og*groupSlots+uint64(bits.TrailingZeros64(m))>>3)
				hv, err := o.hashAt(s)
				if err != nil {
					return fail(err)
				}
				if moved == maxFull(slots) {
					return fail(o.corrupt("the table holds more keys than the header's %d", h.n))
				}
				// The first empty slot on its probe sequence (one exists:
				// fewer keys than slots were placed so far).
				g := home(hv, groups)
				for ; ; g++ {
					if g == groups {
						g = 0
					}
					cw := (*uint64)(o.at(nt + g*o.group))
					if e := zeroBytes(*cw); e != 0 {
						j := uint64(bits.TrailingZeros64(e)) >> 3
						*cw = withByte(*cw, j, byte(ctrlFull|hv&0x7f))
						copy(unsafe.Slice((*byte)(o.slotAt(nt, g*groupSlots+j)), o.slot), unsafe.Slice((*byte)(s), o.slot))
						break
					}
				}
				moved++
			}
		}
		if err := l.Free(o.at(old)); err != nil {
			return fail(err)
		}
		if moved != h.n {
			return fail(o.corrupt("the header counts %d keys, the table holds %d", h.n, moved))
		}
	}
	*(*uint64)(o.at(nt + groups*o.group)) = maxFull(slots) - moved
	h.table, h.slots, h.n = nt, slots, moved
	return l.Commit()
}

// Delete removes k and frees what its value owns; it reports whether k
// was there.
func (h *HashMap[K, V]) Delete(k K) (bool, error) {
	o, err := h.op("Delete")
	if err != nil {
		return false, err
	}
	if err := writable(o.seg, hashMapName, "Delete"); err != nil {
		return false, err
	}
	if err := o.tableOK(); err != nil {
		return false, err
	}
	if h.table == 0 || o.g.isNaN(unsafe.Pointer(&k)) {
		return false, nil
	}
	at, found, _, err := o.find(&k, o.hashOf(&k))
	if err != nil || !found {
		return false, err
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return false, err
	}
	s := o.slotAt(h.table, at)
	l, err := o.seg.BeginLane()
	if err != nil {
		return false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	// Empty if its group has an empty slot (no probe goes past the group,
	// so none needs to see this slot taken), else removed.
	cw := (*uint64)(o.at(o.ctrlOff(at / groupSlots)))
	c, empty := byte(ctrlRemoved), zeroBytes(*cw) != 0
	if empty {
		c = ctrlEmpty
	}
	err = l.Store(cw, withByte(*cw, at%groupSlots, c))
	if err == nil {
		err = l.Store(&h.n, h.n-1)
	}
	if err == nil && empty {
		gw := o.growth()
		err = l.Store(gw, *gw+1)
	}
	if err == nil && len(o.g.keyShape) > 0 {
		err = l.Drop(s, 1, int(o.g.ks), o.g.keyShape)
	}
	if err == nil {
		err = l.Drop(unsafe.Add(s, o.valOff), 1, int(o.g.vs), shape)
	}
	if err != nil {
		l.Abort()
		return false, o.laneErr("Delete", err)
	}
	return true, l.Commit()
}

// Clear removes every key, freeing the table and what the values own.
func (h *HashMap[K, V]) Clear() error {
	o, err := h.op("Clear")
	if err != nil {
		return err
	}
	if err := writable(o.seg, hashMapName, "Clear"); err != nil {
		return err
	}
	if err := o.tableOK(); err != nil {
		return err
	}
	if h.table == 0 {
		return nil
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return err
	}
	l, err := o.seg.BeginLane()
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	var zero HashMap[K, V]
	err = l.Drop(unsafe.Pointer(h), 1, int(unsafe.Sizeof(*h)), zero.containerShape(0, nil, shape))
	if err == nil {
		err = l.Store(&h.n, 0)
	}
	if err == nil {
		err = l.Store(&h.slots, 0)
	}
	if err != nil {
		l.Abort()
		return err
	}
	return l.Commit()
}

// All iterates over the keys, in no particular order (the table's, the
// same in every process), with pointers to their values. The map must not
// change during the loop.
func (h *HashMap[K, V]) All() iter.Seq2[K, *V] {
	return func(yield func(K, *V) bool) {
		o, err := h.op("All")
		if err != nil {
			panic(err)
		}
		if err := o.tableOK(); err != nil {
			panic(err)
		}
		t := h.table
		if t == 0 {
			return
		}
		for g := range h.slots / groupSlots {
			for m := *(*uint64)(o.at(t + g*o.group)) & bytesHi; m != 0; m &= m - 1 {
				s := o.slotAt(t, g*groupSlots+uint64(bits.TrailingZeros64(m))>>3)
				var k K
				if o.g.str {
					b, err := o.slotBytes(s)
					if err != nil {
						panic(err)
					}
					*(*string)(unsafe.Pointer(&k)) = string(b)
				} else {
					k = *(*K)(s)
				}
				if !yield(k, (*V)(unsafe.Add(s, o.valOff))) {
					return
				}
			}
		}
	}
}
