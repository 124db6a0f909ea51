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
// open-addressing table in one block with a stable hash (the same in
// every process, every run and every build: part of the segment's
// format). Keys are as Map's (integers, floats with NaN refused and -0
// equal to 0, fixed-size arrays of those, or strings looked up by Go
// string without allocating); values are any plain data, containers
// included. Its zero value is an empty map.
//
// Values live in the table, in place: Get and GetOrInsert return a pointer
// valid until the next insertion (one may move the table) or removal of
// that key. Every mutating call is crash-atomic: an insertion writes the
// key and value into a free slot, unseen, then publishes the slot and the
// count (and the removed count, for a removed slot) in a lane that saved
// them first (a rollback puts them back); a removal marks the slot free
// and frees what the entry owns after its lane commits; a resize builds
// the whole new table in a new block and publishes it with the header.
// Like a Go map it is not safe for concurrent mutation.
//
// Header (24 bytes): the table block's offset (0: none), the number of
// keys, and the table's size: its groups or its slots, by format. The
// table block starts with a word: how many of its slots are removed.
//
// Two table formats, chosen by the types (the layout fingerprint records
// which):
//
// The word format, when K is one 64-bit integer (int64, uint64 or a type
// of theirs) and V takes at most 56 bytes: slots of the key word and the
// value beside it (8 bytes plus V's size rounded up to 8), a power of two
// of them, probed one after another from the slot that the top bits of
// the key times 0x9e3779b97f4a7c15 (mod 2^64) name, until the key or an
// empty slot; a lookup most often reads
// one cache line. A slot's key word 0 says empty and wordTomb
// (0xa0761d6478bd642f) says removed; those two keys are kept in the
// table block's head instead (a flags word, then their two values). The
// slots start at the first 64-byte boundary past the head. Full and
// removed slots are at most 3 in 4; a rebuild makes room for twice the
// keys (a growing table doubles). A removal leaves its slot empty when
// the next slot is empty (no probe goes past it to a key), removed
// otherwise.
//
// The group format ('G'), for every other key: groups of 7 slots probed
// a group at a time, in the manner of a Swiss table. The table's groups
// (G of them, not a power of two: a table is sized for its keys) follow
// its first word, from the first 64-byte boundary past it. A group is a
// word of control bytes (little-endian: slot j's is bits 8j to 8j+7, j
// from 0 to 6; the top byte is 0), then its 7 keys (each the key's size
// rounded up to 8 bytes), then its 7 values (each V's size), the whole
// rounded up to 8 bytes, or to 64 when the control word and keys fill 64.
// A control byte is 0 for an empty slot, 1 for a removed one, and 0x80 |
// the hash's low 7 bits for a full one. A key with hash x starts at group
// x*G>>64 (the high word of the product) and probes the groups after it
// in turn, wrapping at the table's end, until a group with an empty
// slot. A removal leaves a slot empty when its group has an empty slot
// already (no probe went past it), removed otherwise. Full and removed
// slots are at most 7 in 8; a rebuild (without removed slots) makes room
// for twice the keys in whole groups: 1, 3, 7, ..., 2^k-1 groups as a map
// grows.
type HashMap[K comparable, V any] struct {
	table  uint64
	n      uint64
	groups uint64
}

const (
	hashMapName = "HashMap"
	ctrlEmpty   = 0x00
	ctrlRemoved = 0x01
	ctrlFull    = 0x80 // | the hash's low 7 bits
	groupSlots  = 7
	maxGroups   = 1 << 37
	bytesLo     = 0x0001010101010101 // the slots' control bytes' low bits
	bytesHi     = 0x0080808080808080 // and high bits
)

// zeroBytes has the high bit of each zero control byte of x set, and no
// other bit: exact (the borrow-based trick is not, and an empty slot must
// not be imagined).
func zeroBytes(x uint64) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	return ^((x&low7 + low7) | x | low7) & bytesHi
}

// badCtrl is non-zero when a group's word w has a control byte that is
// neither empty, removed nor full, or its top byte is not 0.
func badCtrl(w uint64) uint64 { return w&((^w&bytesHi>>7)*0x7e) | w>>56 }

// withByte is w with byte j replaced by c.
func withByte(w uint64, j uint64, c byte) uint64 {
	return w&^(0xff<<(8*j)) | uint64(c)<<(8*j)
}

// containerKind is the table's format: 'W' for one-word keys (HashMap
// says when), 'G' for the others. ('H': the format before 'G'; a
// HashMap with one-word keys was 'G' before 'W'.)
func (HashMap[K, V]) containerKind() byte {
	if hg, err := hashGeoOf[K, V](); err == nil && hg.word {
		return 'W'
	}
	return 'G'
}
func (HashMap[K, V]) containerElem() reflect.Type { return reflect.TypeFor[V]() }
func (HashMap[K, V]) mapKey() reflect.Type        { return reflect.TypeFor[K]() }
func (HashMap[K, V]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	hg, err := hashGeoOf[K, V]()
	if err != nil {
		return sh
	}
	if hg.word {
		return sh.WordTable(off, uintptr(hg.slot), wordTomb, elem)
	}
	return sh.HashTable(off, uintptr(hg.group), 8, hg.ks, uintptr(hg.valOff), uintptr(hg.vs), hg.keyShape, elem)
}

// hashGeo is how a HashMap[K, V]'s table is laid out: its keys as Map's
// (ks bytes a key, vs a value); in the 'G' format, the bytes of a group
// and the offset of its values; in the word format, the bytes of a slot.
type hashGeo struct {
	*mapGeo
	group, valOff uint64
	slot          uint64
	word          bool // the word format: K is one 8-byte integer, V at most maxWordValue bytes
}

// newHashGeo lays out groups or slots for g's keys and values.
func newHashGeo(g *mapGeo) hashGeo {
	keys := 8 + groupSlots*uint64(g.ks)
	group := (keys + groupSlots*uint64(g.vs) + 7) &^ 7
	if keys <= 64 {
		group = (group + 63) &^ 63
	}
	return hashGeo{
		mapGeo: g, group: group, valOff: keys,
		slot: 8 + (uint64(g.vs)+7)&^7,
		word: !g.str && g.count == 1 && g.esize == 8 && (g.kind == kInt64 || g.kind == kUint64) && g.vs <= maxWordValue,
	}
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
	e := &hashGeoEntry{key, newHashGeo(g)}
	recentHashGeos[uintptr(key)>>4%uintptr(len(recentHashGeos))].Store(e)
	return &e.g, nil
}

// tableBytes is the size of a table block of groups groups of group
// bytes: the removed count, up to 56 bytes to a 64-byte boundary, the
// groups.
func tableBytes(groups, group uint64) uint64 { return 64 + groups*group }

// tableData is the offset of the first group of the table block at t.
func tableData(t uint64) uint64 { return (t + 8 + 63) &^ 63 }

// tableFits reports whether a table block at t of n groups of group
// bytes lies in seg.
func tableFits(seg *mapped.Segment, t, n, group uint64) bool {
	return n != 0 && n <= maxGroups && t%8 == 0 && t >= seg.BlockStart() && seg.Holds(t, tableBytes(n, group))
}

// hashOp is one call's view of a hash map. A slot's index is its group
// times 8 plus its place in the group.
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

// tableOK checks the header against the segment: the table block holds
// its removed count and groups.
func (o *hashOp[K, V]) tableOK() error {
	if t, n := o.h.table, o.h.groups; o.word && t != 0 && !wordFits(o.seg, t, n, o.slot) {
		return o.corrupt("a table at offset %d of %d slots of %d bytes, outside the segment or not a power of two", t, n, o.slot)
	}
	if t, n := o.h.table, o.h.groups; !o.word && t != 0 && !tableFits(o.seg, t, n, o.group) {
		return o.corrupt("a table at offset %d of %d groups of %d bytes, outside the segment", t, n, o.group)
	}
	return nil
}

// ctrlOff is the offset of group g's control word in the table whose
// groups start at d.
func (o *hashOp[K, V]) ctrlOff(d, g uint64) uint64 { return d + g*o.group }

// keyAt and valAt are slot i's key and value in the table whose groups
// start at d.
func (o *hashOp[K, V]) keyAt(d, i uint64) unsafe.Pointer {
	return o.at(d + i>>3*o.group + 8 + i&7*uint64(o.ks))
}
func (o *hashOp[K, V]) valAt(d, i uint64) unsafe.Pointer {
	return o.at(d + i>>3*o.group + o.valOff + i&7*uint64(o.vs))
}

// removed is the table's count of removed slots.
func (o *hashOp[K, V]) removed() *uint64 { return (*uint64)(o.at(o.h.table)) }

// maxFull is how many slots of groups groups may be full or removed: 7
// in 8.
func maxFull(groups uint64) uint64 { return groups * groupSlots * 7 / 8 }

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
	if o.g.str {
		s := *(*string)(unsafe.Pointer(k))
		return hashBytes(unsafe.Slice(unsafe.StringData(s), len(s)))
	}
	return o.g.hashFixed(unsafe.Pointer(k))
}

// hashAt is the hash of the key at s (a rebuild's).
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

// keyEq reports whether the key at s is k.
func (o *hashOp[K, V]) keyEq(s unsafe.Pointer, k *K) (bool, error) {
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
	t, groups := o.h.table, o.h.groups
	if t == 0 {
		return 0, false, -1, nil
	}
	d := tableData(t)
	tag := bytesLo * (ctrlFull | hv&0x7f)
	free = -1
	g := home(hv, groups)
	for p := groups; p > 0; p-- {
		w := *(*uint64)(o.at(o.ctrlOff(d, g)))
		if badCtrl(w) != 0 {
			return 0, false, 0, o.corrupt("the control word at offset %d says %#x", o.ctrlOff(d, g), w)
		}
		for m := zeroBytes(w ^ tag); m != 0; m &= m - 1 {
			i := g<<3 | uint64(bits.TrailingZeros64(m))>>3
			eq, err := o.keyEq(o.keyAt(d, i), k)
			if err != nil {
				return 0, false, 0, err
			}
			if eq {
				return i, true, free, nil
			}
		}
		if m := ^w & bytesHi; m != 0 && free < 0 {
			free = int64(g<<3 | uint64(bits.TrailingZeros64(m))>>3)
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
	limit := h.groups * groupSlots
	if hg, err := hashGeoOf[K, V](); err == nil && hg.word {
		limit = h.groups + 2 // its slots and the two keys in its head
	}
	if h.n > limit || h.n > uint64(seg.Size()) {
		panic(damaged(seg, hashMapName, unsafe.Pointer(h), "%d keys in a table of %d", h.n, h.groups))
	}
	return int(h.n)
}

// Get returns a pointer to k's value, in place, and whether k is there.
func (h *HashMap[K, V]) Get(k K) (*V, bool) {
	// The word format's lookups of a table this process checked before
	// (hashlook.go) go straight to it: the record's header address, type
	// and table are compared, nothing is called.
	if unsafe.Sizeof(k) == 8 {
		if e := wordLooks[wordLookSlot(unsafe.Pointer(h))].Load(); e != nil && e.h == uintptr(unsafe.Pointer(h)) &&
			e.key == keyOf((*HashMap[K, V])(nil)) && e.t == h.table && e.n == h.groups {
			kw := *(*uint64)(unsafe.Pointer(&k))
			if kw != 0 && kw != wordTomb {
				// wordProbe, written out: its results, returned and
				// tested, cost 2-3 ns a lookup (measured).
				slot := 8 + (uint64(unsafe.Sizeof(*new(V)))+7)&^7 // a constant in each compiled shape
				n := e.n
				i := wordHome(kw, n)
				for p := n; p > 0; p-- {
					s := unsafe.Add(e.data, i*slot)
					switch *(*uint64)(s) {
					case kw:
						return (*V)(unsafe.Add(s, 8)), true
					case 0:
						return nil, false
					}
					i = (i + 1) & (n - 1)
				}
			}
		}
	}
	return h.getWord(k)
}

// getWord is Get for a map without a record: the word format's table is
// checked, recorded and searched, written out here with nothing called
// but the record's store. The two keys kept in the table's head, misuse,
// corruption and a table past the size this process last saw go the
// general way, which says what they are.
func (h *HashMap[K, V]) getWord(k K) (*V, bool) {
	seg := mapped.SegmentAt(unsafe.Pointer(h))
	key := keyOf((*HashMap[K, V])(nil))
	e := recentHashGeos[uintptr(key)>>4%uintptr(len(recentHashGeos))].Load()
	if seg != nil && e != nil && e.key == key && e.g.word {
		slot := 8 + (uint64(unsafe.Sizeof(*new(V)))+7)&^7 // e.g.slot; a constant in each compiled shape
		t, n := h.table, h.groups
		if t == 0 {
			return nil, false
		}
		kw := *(*uint64)(unsafe.Pointer(&k))
		if wordFits(seg, t, n, slot) {
			base := unsafe.Add(seg.Base(), wordData(t, slot))
			rememberWord(unsafe.Pointer(h), key, t, n, base, seg)
			if kw != 0 && kw != wordTomb {
				if v, done := wordProbe(base, n, slot, kw); done {
					return (*V)(v), v != nil
				}
			}
		}
	}
	return h.get(k)
}

// wordProbe looks for kw, not a head key, in the table of n slots of
// slot bytes at data: its value, done; nil, done when an empty slot ends
// the probe; nil, not done after n slots (a table with no empty slot:
// the general way probes it again, bounded, and finds it absent). It
// inlines.
func wordProbe(data unsafe.Pointer, n, slot, kw uint64) (v unsafe.Pointer, done bool) {
	i := wordHome(kw, n)
	for p := n; p > 0; p-- {
		s := unsafe.Add(data, i*slot)
		switch *(*uint64)(s) {
		case kw:
			return unsafe.Add(s, 8), true
		case 0:
			return nil, true
		}
		i = (i + 1) & (n - 1)
	}
	return nil, false
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
	if o.word {
		p, err := o.wordGet(*(*uint64)(unsafe.Pointer(&k)))
		if err != nil {
			panic(err)
		}
		return (*V)(p), p != nil
	}
	at, found, _, err := o.find(&k, o.hashOf(&k))
	if err != nil {
		panic(err)
	}
	if !found {
		return nil, false
	}
	return (*V)(o.valAt(tableData(h.table), at)), true
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
	if p, inserted, done, err := h.putWord(k, v, overwrite); done {
		return p, inserted, err
	}
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
	if o.word {
		return o.wordPut(method, *(*uint64)(unsafe.Pointer(&k)), v, overwrite)
	}
	hv := o.hashOf(&k)
	for try := 0; ; try++ {
		at, found, free, err := o.find(&k, hv)
		if err != nil {
			return nil, false, err
		}
		if found {
			p := o.valAt(tableData(h.table), at)
			if !overwrite {
				return (*V)(p), false, nil
			}
			shape, _, err := shapeFor[V]()
			if err != nil {
				return nil, false, err
			}
			return (*V)(p), false, o.replace(method, p, v, shape)
		}
		// A removed slot is reused as it is; an empty one only while full
		// and removed slots stay within 7 in 8 (else the table is rebuilt
		// first: without removed slots, and larger if it holds many
		// keys).
		if free >= 0 {
			i := uint64(free)
			w := *(*uint64)(o.at(o.ctrlOff(tableData(h.table), i>>3)))
			if byte(w>>(8*(i&7))) == ctrlRemoved {
				return o.insertAt(i, &k, hv, v, true)
			}
			if r := *o.removed(); r > h.groups*groupSlots || h.n > h.groups*groupSlots {
				return nil, false, o.corrupt("the table at offset %d of %d groups says %d keys and %d slots removed", h.table, h.groups, h.n, r)
			} else if h.n+r < maxFull(h.groups) {
				return o.insertAt(i, &k, hv, v, false)
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
			if r := *o.removed(); r > h.groups*groupSlots || h.n > h.groups*groupSlots {
				return nil, false, o.corrupt("the table at offset %d of %d groups says %d keys and %d slots removed", h.table, h.groups, h.n, r)
			}
		}
		groups, err := o.sizeFor(h.n + 1)
		if err != nil {
			return nil, false, err
		}
		if err := o.rebuild(groups); err != nil {
			return nil, false, err
		}
	}
}

// sizeFor is the group count of a rebuilt table for n keys: as many
// groups as may hold twice n full, so that at least n more insertions
// fill it (a rebuild's cost, spread over them, is constant).
func (o *hashOp[K, V]) sizeFor(n uint64) (uint64, error) {
	if n > maxGroups {
		return 0, fmt.Errorf("mapstore: objects.HashMap.Set in %s: a table for %d keys: too many: %w", o.seg.Name(), n, mapped.ErrNoSpace)
	}
	return max((16*n+48)/49, 1), nil // maxFull(groups) = 49 groups / 8 >= 2n
}

// insertAt puts k (hash hv) and *v (or zero) in free slot i (a removed
// one if removed, which takes one from the removed count).
func (o *hashOp[K, V]) insertAt(i uint64, k *K, hv uint64, v *V, removed bool) (*V, bool, error) {
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return nil, false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	d := tableData(o.h.table)
	p, kp := o.valAt(d, i), unsafe.Slice((*byte)(o.keyAt(d, i)), o.ks)
	// The slot is free: its key and value are written now, unseen until
	// its control byte is set.
	if o.g.str {
		b := builder[K, V]{o: &o.mapOp, l: &l} // a long key's bytes get a block in the lane
		var slot unsafe.Pointer
		if slot, err = b.makeSlot(&b.buf[0], k); err == nil {
			copy(kp, unsafe.Slice((*byte)(slot), o.ks))
		}
	} else {
		n := copy(kp, unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
		clear(kp[n:]) // as makeSlot pads
	}
	if err == nil {
		if v != nil {
			copy(unsafe.Slice((*byte)(p), o.vs), unsafe.Slice((*byte)(unsafe.Pointer(v)), o.vs))
		} else {
			clear(unsafe.Slice((*byte)(p), o.vs))
		}
		cw := (*uint64)(o.at(o.ctrlOff(d, i>>3)))
		err = o.publish(&l, cw, withByte(*cw, i&7, byte(ctrlFull|hv&0x7f)), true, removed)
	}
	if err != nil {
		l.Abort()
		return nil, false, o.laneErr("Set", err)
	}
	if err := l.Commit(); err != nil {
		return nil, false, err
	}
	return (*V)(p), true, nil
}

// publish sets, in lane l, the word w that says whether a slot (or a
// key in the word format's head) is full to nw, and the count one up
// (add) or down; a removed slot taken or left (removed) moves the
// removed count the other way.
func (o *hashOp[K, V]) publish(l *mapped.Lane, w *uint64, nw uint64, add, removed bool) error {
	n, r, dr := o.h.n-1, o.removed(), uint64(1)
	if add {
		n, dr = o.h.n+1, ^uint64(0) // -1
	}
	err := saveSet(l, w, nw)
	if err == nil {
		err = saveSet(l, &o.h.n, n)
	}
	if err == nil && removed {
		err = saveSet(l, r, *r+dr)
	}
	return err
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

// rebuild moves every entry to a new table of groups groups, in a lane: the
// new table is built in a new block, then published with the header; the
// old block is freed after the commit (the entries' keys and values move
// with their bytes; each key is hashed again).
func (o *hashOp[K, V]) rebuild(groups uint64) error {
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
	h := o.h
	if err := l.Save(unsafe.Pointer(h), int(unsafe.Sizeof(*h))); err != nil {
		return fail(err)
	}
	blk, err := l.Allocate(int(tableBytes(groups, o.group)))
	if err != nil {
		return fail(fmt.Errorf("mapstore: objects.HashMap: a table of %d groups of %d bytes: %w", groups, o.group, err))
	}
	nt := offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	nd := tableData(nt)
	for g := range groups { // every slot empty; their bytes are not read
		*(*uint64)(o.at(o.ctrlOff(nd, g))) = 0
	}
	moved := uint64(0)
	if old := h.table; old != 0 {
		od := tableData(old)
		for og := range h.groups {
			w := *(*uint64)(o.at(o.ctrlOff(od, og)))
			if badCtrl(w) != 0 {
				return fail(o.corrupt("the control word at offset %d says %#x", o.ctrlOff(od, og), w))
			}
			for m := w & bytesHi; m != 0; m &= m - 1 {
				i := og<<3 | uint64(bits.TrailingZeros64(m))>>3
				hv, err := o.hashAt(o.keyAt(od, i))
				if err != nil {
					return fail(err)
				}
				if moved == maxFull(groups) {
					return fail(o.corrupt("the table holds more keys than the header's %d", h.n))
				}
				// The first empty slot on its probe sequence (one exists:
				// fewer keys than slots were placed so far).
				g := home(hv, groups)
				for ; ; g++ {
					if g == groups {
						g = 0
					}
					cw := (*uint64)(o.at(o.ctrlOff(nd, g)))
					if e := zeroBytes(*cw); e != 0 {
						j := g<<3 | uint64(bits.TrailingZeros64(e))>>3
						*cw = withByte(*cw, j&7, byte(ctrlFull|hv&0x7f))
						copy(unsafe.Slice((*byte)(o.keyAt(nd, j)), o.ks), unsafe.Slice((*byte)(o.keyAt(od, i)), o.ks))
						copy(unsafe.Slice((*byte)(o.valAt(nd, j)), o.vs), unsafe.Slice((*byte)(o.valAt(od, i)), o.vs))
						break
					}
				}
				moved++
			}
		}
		if err := o.retire(&l, old, moved); err != nil {
			return fail(err)
		}
	}
	*(*uint64)(o.at(nt)) = 0 // no slot removed
	h.table, h.groups, h.n = nt, groups, moved
	return l.Commit()
}

// retire ends a rebuild that moved moved keys out of the table block at
// old: the block is freed once lane l commits, and the move must have
// found as many keys as the header counts.
func (o *hashOp[K, V]) retire(l *mapped.Lane, old, moved uint64) error {
	if err := l.Free(o.at(old)); err != nil {
		return err
	}
	if moved != o.h.n {
		return o.corrupt("the header counts %d keys, the table holds %d", o.h.n, moved)
	}
	return nil
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
	if o.word {
		return o.wordDelete(*(*uint64)(unsafe.Pointer(&k)))
	}
	at, found, _, err := o.find(&k, o.hashOf(&k))
	if err != nil || !found {
		return false, err
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return false, err
	}
	d := tableData(h.table)
	var l mapped.Lane
	err = l.Begin(o.seg)
	if err != nil {
		return false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	// Empty if its group has an empty slot (no probe goes past the group,
	// so none needs to see this slot taken), else removed.
	cw := (*uint64)(o.at(o.ctrlOff(d, at>>3)))
	c, empty := byte(ctrlRemoved), zeroBytes(*cw) != 0
	if empty {
		c = ctrlEmpty
	}
	err = o.publish(&l, cw, withByte(*cw, at&7, c), false, !empty)
	if err == nil && len(o.g.keyShape) > 0 {
		err = l.Drop(o.keyAt(d, at), 1, int(o.ks), o.g.keyShape)
	}
	if err == nil {
		err = l.Drop(o.valAt(d, at), 1, int(o.vs), shape)
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
	var l mapped.Lane
	err = l.Begin(o.seg)
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
		err = l.Store(&h.groups, 0)
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
		if o.word {
			o.wordAll(yield)
			return
		}
		d := tableData(t)
		for g := range h.groups {
			for m := *(*uint64)(o.at(o.ctrlOff(d, g))) & bytesHi; m != 0; m &= m - 1 {
				i := g<<3 | uint64(bits.TrailingZeros64(m))>>3
				s := o.keyAt(d, i)
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
				if !yield(k, (*V)(o.valAt(d, i))) {
					return
				}
			}
		}
	}
}
