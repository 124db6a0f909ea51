package objects

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math"
	"reflect"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// HashMap is an unordered map from K to V that lives in a segment: open
// addressing with linear probing in one table block, and a stable hash
// (the same in every process, every run and every build: part of the
// segment's format). Keys are as Map's (integers, floats with NaN refused
// and -0 equal to 0, fixed-size arrays of those, or strings looked up by
// Go string without allocating); values are any plain data, containers
// included. Its zero value is an empty map.
//
// Values live in the table, in place: Get and GetOrInsert return a
// pointer valid until the next insertion (one may move the table) or
// removal of that key. Every mutating call is crash-atomic: an insertion
// writes the key and value into a free slot, then publishes the slot and
// the count after its lane commits; a removal marks the slot removed and
// frees what the entry owns after the commit; a resize builds the whole
// new table in a new block and publishes it with the header. Like a Go
// map it is not safe for concurrent mutation.
//
// Header (24 bytes): the table's offset (0: none), the number of keys,
// the number of slots (a power of two). A slot: a word (0 free, 1
// removed, otherwise the key's hash with bit 63 set), the key, the value.
type HashMap[K comparable, V any] struct {
	table uint64
	n     uint64
	slots uint64
}

const (
	hashMapName  = "HashMap"
	slotFree     = 0
	slotRemoved  = 1
	slotFull     = uint64(1) << 63
	hashMinSlots = 8
	maxProbe     = 64 // an insertion that probes further rebuilds the table
)

func (HashMap[K, V]) containerKind() byte         { return 'H' }
func (HashMap[K, V]) containerElem() reflect.Type { return reflect.TypeFor[V]() }
func (HashMap[K, V]) mapKey() reflect.Type        { return reflect.TypeFor[K]() }
func (HashMap[K, V]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return sh
	}
	slot, valOff := hashSlot(g)
	return sh.HashTable(off, slot, 8, valOff, g.keyShape, elem)
}

// hashSlot is a slot's size and its value's offset.
func hashSlot(g *mapGeo) (slot, valOff uintptr) {
	valOff = 8 + g.ks
	return valOff + (g.vs+7)&^7, valOff
}

// hashOp is one call's view of a hash map.
type hashOp[K comparable, V any] struct {
	mapOp[K, V]
	h            *HashMap[K, V]
	slot, valOff uint64
}

func (h *HashMap[K, V]) op(method string) (hashOp[K, V], error) {
	seg := segFor(unsafe.Pointer(h), hashMapName, method)
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return hashOp[K, V]{}, fmt.Errorf("mapstore: objects.HashMap.%s: %w", method, err)
	}
	slot, valOff := hashSlot(g)
	return hashOp[K, V]{
		mapOp: mapOp[K, V]{seg: seg, g: g, base: seg.Base(), self: unsafe.Pointer(h), typ: hashMapName},
		h:     h, slot: uint64(slot), valOff: uint64(valOff),
	}, nil
}

// tableOK checks the header against the segment: the table block holds
// its slots.
func (o *hashOp[K, V]) tableOK() error {
	t, n := o.h.table, o.h.slots
	if t == 0 {
		return nil
	}
	if n < hashMinSlots || n&(n-1) != 0 || n > 1<<40 || t%8 != 0 || !o.seg.Holds(t, n*o.slot) {
		return o.corrupt("a table at offset %d of %d slots of %d bytes, outside the segment", t, n, o.slot)
	}
	return nil
}

func (o *hashOp[K, V]) slotAt(t, i uint64) unsafe.Pointer { return o.at(t + i*o.slot) }

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

// hashOf is k's hash, with bit 63 set (a full slot's word).
func (o *hashOp[K, V]) hashOf(k *K) uint64 {
	var h uint64
	if o.g.str {
		s := *(*string)(unsafe.Pointer(k))
		h = hashBytes(unsafe.Slice(unsafe.StringData(s), len(s)))
	} else {
		h = o.g.hashFixed(unsafe.Pointer(k))
	}
	return h | slotFull
}

// find probes for k (hash h): the slot holding it (found), or the first
// free or removed slot on its probe sequence (-1 if the table is full).
func (o *hashOp[K, V]) find(k *K, h uint64) (at int64, free int64, found bool, probes int, err error) {
	t, n := o.h.table, o.h.slots
	free = -1
	if t == 0 {
		return -1, -1, false, 0, nil
	}
	mask := n - 1
	for i, p := h&mask, uint64(0); p < n; i, p = (i+1)&mask, p+1 {
		w := *(*uint64)(o.slotAt(t, i))
		switch {
		case w == slotFree:
			if free < 0 {
				free = int64(i)
			}
			return -1, free, false, int(p), nil
		case w == slotRemoved:
			if free < 0 {
				free = int64(i)
			}
		case w == h:
			c, err := o.cmpKey(unsafe.Add(o.slotAt(t, i), 8), k)
			if err != nil {
				return 0, 0, false, 0, err
			}
			if c == 0 {
				return int64(i), free, true, int(p), nil
			}
		case w < slotFull:
			return 0, 0, false, 0, o.corrupt("a slot at offset %d says %#x", t+i*o.slot, w)
		}
	}
	return -1, free, false, int(n), nil
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

// Get returns a pointer to k's value, in place, and whether k is there.
func (h *HashMap[K, V]) Get(k K) (*V, bool) {
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
	at, _, found, _, err := o.find(&k, o.hashOf(&k))
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
		at, free, found, probes, err := o.find(&k, hv)
		if err != nil {
			return nil, false, err
		}
		if found {
			p := unsafe.Add(o.slotAt(h.table, uint64(at)), o.valOff)
			if !overwrite {
				return (*V)(p), false, nil
			}
			shape, _, err := shapeFor[V]()
			if err != nil {
				return nil, false, err
			}
			return (*V)(p), false, o.replace(method, p, v, shape)
		}
		// Room, without a long probe? Else rebuild first (a fresh table
		// has no removed slots; it doubles when more than half full).
		if free >= 0 && (h.n+1)*8 <= h.slots*7 && probes <= maxProbe || try > 0 && free >= 0 {
			return o.insertAt(uint64(free), &k, hv, v)
		}
		if try > 1 {
			return nil, false, o.corrupt("no free slot after a rebuild")
		}
		slots := max(h.slots, hashMinSlots)
		if (h.n+1)*2 > slots {
			slots *= 2
		}
		if err := o.rebuild(slots); err != nil {
			return nil, false, err
		}
	}
}

// insertAt puts k (hash hv) and *v (or zero) in free slot i.
func (o *hashOp[K, V]) insertAt(i uint64, k *K, hv uint64, v *V) (*V, bool, error) {
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
		// until its word is published after the commit.
		copy(unsafe.Slice((*byte)(unsafe.Add(s, 8)), o.g.ks), unsafe.Slice((*byte)(slot), o.g.ks))
		p := unsafe.Add(s, o.valOff)
		if v != nil {
			copy(unsafe.Slice((*byte)(p), o.g.vs), unsafe.Slice((*byte)(unsafe.Pointer(v)), o.g.vs))
		} else {
			clear(unsafe.Slice((*byte)(p), o.g.vs))
		}
		err = l.Store((*uint64)(s), hv)
		if err == nil {
			err = l.Store(&o.h.n, o.h.n+1)
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

// rebuild moves every entry to a new table of slots slots, in a lane: the
// new table is built in a new block, then published with the header; the
// old block is freed after the commit (the entries' keys and values move
// with their bytes).
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
	blk, err := l.Allocate(int(slots * o.slot))
	if err != nil {
		return fail(fmt.Errorf("mapstore: objects.HashMap: a table of %d slots: %w", slots, err))
	}
	clear(blk)
	nt := offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	moved := uint64(0)
	if old := h.table; old != 0 {
		mask := slots - 1
		for i := range h.slots {
			s := o.slotAt(old, i)
			w := *(*uint64)(s)
			if w < slotFull {
				continue
			}
			j := w & mask
			for p := uint64(0); *(*uint64)(o.slotAt(nt, j)) != slotFree; j, p = (j+1)&mask, p+1 {
				if p >= slots {
					return fail(o.corrupt("more entries than slots"))
				}
			}
			copy(unsafe.Slice((*byte)(o.slotAt(nt, j)), o.slot), unsafe.Slice((*byte)(s), o.slot))
			moved++
		}
		if err := l.Free(o.at(old)); err != nil {
			return fail(err)
		}
		if moved != h.n {
			return fail(o.corrupt("the header counts %d keys, the table holds %d", h.n, moved))
		}
	}
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
	at, _, found, _, err := o.find(&k, o.hashOf(&k))
	if err != nil || !found {
		return false, err
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return false, err
	}
	s := o.slotAt(h.table, uint64(at))
	l, err := o.seg.BeginLane()
	if err != nil {
		return false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	err = l.Store((*uint64)(s), slotRemoved)
	if err == nil {
		err = l.Store(&h.n, h.n-1)
	}
	if err == nil && len(o.g.keyShape) > 0 {
		err = l.Drop(unsafe.Add(s, 8), 1, int(o.g.ks), o.g.keyShape)
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
		for i := range h.slots {
			s := o.slotAt(t, i)
			if *(*uint64)(s) < slotFull {
				continue
			}
			var k K
			if o.g.str {
				b, err := o.slotBytes(unsafe.Add(s, 8))
				if err != nil {
					panic(err)
				}
				*(*string)(unsafe.Pointer(&k)) = string(b)
			} else {
				k = *(*K)(unsafe.Add(s, 8))
			}
			if !yield(k, (*V)(unsafe.Add(s, o.valOff))) {
				return
			}
		}
	}
}
