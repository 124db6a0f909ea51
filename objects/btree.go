package objects

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"math"
	"math/bits"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// Map is an ordered map from K to V that lives in a segment: a B+tree of
// wide nodes (about 512 bytes: a few cache lines of keys per node, so a
// lookup misses the cache a few times in all), every node a block of the
// segment. With one-word integer keys on a machine with AVX-512, a
// lookup compares all of a node's keys with the key at once. Its zero value is an empty map: construct it in a segment
// (objects.Construct(seg, name, objects.Map[K, V]{}), or as a field of a
// value there) and call its methods through the pointer you get.
//
// Keys are integers, floats (NaN is refused: ErrInvalidKey), fixed-size
// arrays of those (ordered element by element), or Go strings: a
// Map[string, V] stores each key in the segment (up to 16 bytes inline in
// its node, longer ones in a block of their own) and Get, Has, Delete and
// the others take a Go string and do not allocate. Values are any plain
// data, containers included, to any depth: Delete, Set over an existing
// key, Clear and destroying the map free what the removed values own.
//
// Values live in the leaves, in place: Get and GetOrInsert return a
// pointer to one, valid until the next change of the map (a change
// moves the values of the leaf it inserts into, or rebuilds the nodes it
// touches, like a Go slice's append moves its array). Change a value
// through the pointer, or build a nested value where it lies
// (r, _, _ := m.GetOrInsert("alice"); r.Name.Set("Alice")), before
// changing the map again.
//
// Every mutating call is crash-atomic: it writes the nodes it changes as
// new blocks in a mapped.Lane and publishes them with one pointer; a new
// key whose leaf has room goes into it in place instead, and one whose
// full leaf splits into a parent with room splits it in place, the lane
// saving first what changes (the keys, values and children that move,
// the counts). So
// after a SIGKILL anywhere in it, and recovery, the map holds the state
// before the call or after it, and no block leaks. Like a Go map it is
// not safe for concurrent mutation, nor for reading while another
// process changes it.
//
// Header (24 bytes): the root node's offset (0: empty), the number of
// keys, a reserved word. A node: a word with its number of keys (bits
// 0-15) and whether it is a leaf (bit 63), a reserved word, the keys,
// then a leaf's values or an internal node's children (offsets).
type Map[K comparable, V any] struct {
	root uint64
	n    uint64
	_    uint64
}

// ErrInvalidKey: a key a Map cannot order (a float NaN).
var ErrInvalidKey = errors.New("invalid map key")

const (
	mapName     = "Map"
	nodeLeaf    = uint64(1) << 63
	nodeHdr     = 16
	nodeTarget  = 512 // bytes a node aims at
	maxMapDepth = 24  // far more than 2^64 keys need at the narrowest fan-out
	minInnerCap = 15  // keys an inner node holds at least (string keys: 15)

	keyInline    = uint64(1) << 63 // a string key slot's bytes are inline
	keyInlineMax = 16
	strSlot      = 24
)

func (Map[K, V]) containerKind() byte         { return 'M' }
func (Map[K, V]) containerElem() reflect.Type { return reflect.TypeFor[V]() }
func (Map[K, V]) mapKey() reflect.Type        { return reflect.TypeFor[K]() }
func (Map[K, V]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return sh // refused when the type's info is built (mapKeyCheck)
	}
	return sh.Tree(off, mapped.TreeGeometry{
		KeyOff: nodeHdr, KeyStride: g.ks, ValOff: g.valOff, ValStride: g.vs, ChildOff: g.childOff,
		MaxKeys: g.maxKeys(), Key: g.keyShape, Val: elem,
	})
}

// mapGeo is how a Map[K, V]'s nodes are laid out and its keys compared.
type mapGeo struct {
	str      bool    // K is string
	ks, vs   uintptr // bytes per key slot, per value
	leafCap  int     // keys a leaf holds
	innerCap int     // keys an internal node holds
	valOff   uintptr // a leaf's values
	childOff uintptr // an internal node's children
	leafSize uintptr
	inSize   uintptr
	keyShape mapped.Shape
	kind     uint8   // a fixed-size K's element kind (kInt8 ...)
	count    int     // and its elements
	esize    uintptr // and their size
	// word says K is one 64-bit integer (uint64, int64 and their kin):
	// walkWord's path; signed says it is an int64. top is the greatest
	// power of 2 not above the larger capacity; minSize, maxSize the
	// smaller and the larger of the two node sizes.
	word, signed     bool
	top              int
	walk             walkGeo
	minSize, maxSize uintptr
}

func (g *mapGeo) maxKeys() int { return max(g.leafCap, g.innerCap) }

var mapGeos sync.Map // reflect.Type of Map[K, V] -> *mapGeo or error

// recentGeos is a small direct-mapped cache in front of mapGeos, keyed by
// the type word of *Map[K, V] (a constant the compiler emits), as recent
// is for typeInfo: a hit costs a few instructions.
var recentGeos [64]atomic.Pointer[geoEntry]

type geoEntry struct {
	key unsafe.Pointer
	g   *mapGeo
}

func mapGeoOf[K comparable, V any]() (*mapGeo, error) {
	key := keyOf((*Map[K, V])(nil))
	slot := &recentGeos[uintptr(key)>>4%uintptr(len(recentGeos))]
	if e := slot.Load(); e != nil && e.key == key {
		return e.g, nil
	}
	g, err := mapGeoSlow[K, V]()
	if err == nil {
		slot.Store(&geoEntry{key, g})
	}
	return g, err
}

func mapGeoSlow[K comparable, V any]() (*mapGeo, error) {
	t := reflect.TypeFor[Map[K, V]]()
	if v, ok := mapGeos.Load(t); ok {
		if g, ok := v.(*mapGeo); ok {
			return g, nil
		}
		return nil, v.(error)
	}
	g, err := buildMapGeo(reflect.TypeFor[K](), reflect.TypeFor[V]())
	if err != nil {
		mapGeos.Store(t, err)
		return nil, err
	}
	v, _ := mapGeos.LoadOrStore(t, g)
	return v.(*mapGeo), nil
}

func buildMapGeo(kt, vt reflect.Type) (*mapGeo, error) {
	if err := mapKeyCheck(kt); err != nil {
		return nil, err
	}
	g := &mapGeo{vs: vt.Size()}
	if vt.Align() > 8 {
		return nil, fmt.Errorf("map value %s: alignment %d, more than 8: %w", typeName(vt), vt.Align(), ErrNotPlainData)
	}
	if kt.Kind() == reflect.String {
		g.str, g.ks = true, strSlot
		g.keyShape = mapped.Shape(nil).KeySlot(0)
	} else {
		kind, count, esize, err := keyKind(kt)
		if err != nil {
			return nil, err
		}
		g.ks, g.kind, g.count, g.esize = (kt.Size()+7)&^7, kind, count, esize
		if kt.Size() == 0 {
			g.ks = 8
		}
	}
	per := g.ks + (g.vs+7)&^7
	g.leafCap = min(max(int((nodeTarget-nodeHdr)/per), 4), 64)
	// An inner node holds at least minInnerCap keys, however large they
	// are (a node of 128-byte keys takes about 2 KiB): with fewer, a tree
	// gets so deep that the nodes one Set or Delete rewrites up to the
	// root no longer fit in a lane (ErrLaneFull at 78,732 keys of 128
	// bytes with nodes of 4).
	g.innerCap = min(max(int((nodeTarget-nodeHdr-8)/(g.ks+8)), minInnerCap), 64)
	g.valOff = nodeHdr + uintptr(g.leafCap)*g.ks
	g.leafSize = g.valOff + uintptr(g.leafCap)*g.vs
	g.childOff = nodeHdr + uintptr(g.innerCap)*g.ks
	g.inSize = g.childOff + uintptr(g.innerCap+1)*8
	g.minSize, g.maxSize = min(g.leafSize, g.inSize), max(g.leafSize, g.inSize)
	if !g.str && g.count == 1 && g.ks == 8 && (g.kind == kUint64 || g.kind == kInt64) {
		g.word, g.signed = true, g.kind == kInt64
		g.top = 1 << (bits.Len(uint(g.maxKeys())) - 1)
		g.walk = newWalkGeo(g)
	}
	return g, nil
}

// Fixed-size key kinds: an integer or float type, or an array of one
// (arrays of arrays flattened: the elements are contiguous and compared
// in order).
const (
	kInt8 = iota + 1
	kInt16
	kInt32
	kInt64
	kUint8
	kUint16
	kUint32
	kUint64
	kFloat32
	kFloat64
)

// keyKind is the element kind, element count and element size of a
// fixed-size key type.
func keyKind(t reflect.Type) (kind uint8, count int, esize uintptr, err error) {
	count = 1
	for t.Kind() == reflect.Array {
		count *= t.Len()
		t = t.Elem()
	}
	kinds := map[reflect.Kind]uint8{
		reflect.Int8: kInt8, reflect.Int16: kInt16, reflect.Int32: kInt32, reflect.Int64: kInt64, reflect.Int: kInt64,
		reflect.Uint8: kUint8, reflect.Bool: kUint8, reflect.Uint16: kUint16, reflect.Uint32: kUint32,
		reflect.Uint64: kUint64, reflect.Uint: kUint64, reflect.Uintptr: kUint64,
		reflect.Float32: kFloat32, reflect.Float64: kFloat64,
	}
	kind, ok := kinds[t.Kind()]
	if !ok {
		return 0, 0, 0, fmt.Errorf("map key %s: keys are integers, floats, fixed-size arrays of those, or strings: %w", typeName(t), ErrNotPlainData)
	}
	return kind, count, t.Size(), nil
}

// cmpElem compares two keys' elements of kind at a and b.
func cmpElem(kind uint8, a, b unsafe.Pointer) int {
	switch kind {
	case kInt8:
		return cmp3(*(*int8)(a), *(*int8)(b))
	case kInt16:
		return cmp3(*(*int16)(a), *(*int16)(b))
	case kInt32:
		return cmp3(*(*int32)(a), *(*int32)(b))
	case kInt64:
		return cmp3(*(*int64)(a), *(*int64)(b))
	case kUint8:
		return cmp3(*(*uint8)(a), *(*uint8)(b))
	case kUint16:
		return cmp3(*(*uint16)(a), *(*uint16)(b))
	case kUint32:
		return cmp3(*(*uint32)(a), *(*uint32)(b))
	case kUint64:
		return cmp3(*(*uint64)(a), *(*uint64)(b))
	case kFloat32:
		return cmp3(*(*float32)(a), *(*float32)(b))
	}
	return cmp3(*(*float64)(a), *(*float64)(b))
}

// cmpFixed compares two fixed-size keys.
func (g *mapGeo) cmpFixed(a, b unsafe.Pointer) int {
	if g.count == 1 {
		return cmpElem(g.kind, a, b)
	}
	for i := range g.count {
		if c := cmpElem(g.kind, unsafe.Add(a, uintptr(i)*g.esize), unsafe.Add(b, uintptr(i)*g.esize)); c != 0 {
			return c
		}
	}
	return 0
}

// isNaN reports whether a float key (or an element of one) is NaN.
func (g *mapGeo) isNaN(k unsafe.Pointer) bool {
	if g.str || (g.kind != kFloat32 && g.kind != kFloat64) {
		return false
	}
	for i := range g.count {
		p := unsafe.Add(k, uintptr(i)*g.esize)
		if g.kind == kFloat32 && math.IsNaN(float64(*(*float32)(p))) || g.kind == kFloat64 && math.IsNaN(*(*float64)(p)) {
			return true
		}
	}
	return false
}

// mapOp is one call's view of a map: its segment, geometry and header.
type mapOp[K comparable, V any] struct {
	m    *Map[K, V]
	seg  *mapped.Segment
	g    *mapGeo
	base unsafe.Pointer
	self unsafe.Pointer // the container's header, for errors
	typ  string         // and its type's name
}

func (m *Map[K, V]) op(method string) (mapOp[K, V], error) {
	var o mapOp[K, V]
	err := m.opInto(&o, method)
	return o, err
}

// opInto is op writing into o: put's, which keeps o in memory, where a
// returned mapOp is copied in 16-byte loads of the 8-byte stores just
// made (the stores do not forward: a stall per call).
func (m *Map[K, V]) opInto(o *mapOp[K, V], method string) error {
	seg := segFor(unsafe.Pointer(m), mapName, method)
	g, err := mapGeoOf[K, V]()
	if err != nil {
		return fmt.Errorf("mapstore: objects.Map.%s: %w", method, err)
	}
	o.m, o.seg, o.g, o.base, o.self, o.typ = m, seg, g, seg.Base(), unsafe.Pointer(m), mapName
	return nil
}

func (o *mapOp[K, V]) at(off uint64) unsafe.Pointer { return unsafe.Add(o.base, off) }

// node checks the node at off against the segment and returns its key
// count and whether it is a leaf.
func (o *mapOp[K, V]) node(off uint64) (n int, leaf bool, err error) {
	if off%8 != 0 || !o.seg.Holds(off, uint64(nodeHdr)) {
		return 0, false, o.corrupt("a node at offset %d, outside the segment", off)
	}
	h := *(*uint64)(o.at(off))
	n, leaf = int(h&0xffff), h&nodeLeaf != 0
	size, capn := o.g.inSize, o.g.innerCap
	if leaf {
		size, capn = o.g.leafSize, o.g.leafCap
	}
	if n > capn || !o.seg.Holds(off, uint64(size)) {
		return 0, false, o.corrupt("a node at offset %d says %d keys (a %s holds %d) or does not fit the segment", off, n, map[bool]string{true: "leaf", false: "node"}[leaf], capn)
	}
	return n, leaf, nil
}

func (o *mapOp[K, V]) corrupt(format string, args ...any) error {
	return damaged(o.seg, o.typ, o.self, format, args...)
}

func (o *mapOp[K, V]) key(nd uint64, i int) unsafe.Pointer {
	return o.at(nd + nodeHdr + uint64(i)*uint64(o.g.ks))
}
func (o *mapOp[K, V]) val(nd uint64, i int) unsafe.Pointer {
	return o.at(nd + uint64(o.g.valOff) + uint64(i)*uint64(o.g.vs))
}
func (o *mapOp[K, V]) child(nd uint64, i int) *uint64 {
	return (*uint64)(o.at(nd + uint64(o.g.childOff) + uint64(i)*8))
}

// slotBytes is a string key slot's bytes, checked against the segment.
func (o *mapOp[K, V]) slotBytes(slot unsafe.Pointer) ([]byte, error) {
	w := (*[3]uint64)(slot)
	if w[0]&keyInline != 0 {
		n := w[0] &^ keyInline
		if n > keyInlineMax {
			return nil, o.corrupt("an inline key of %d bytes", n)
		}
		return unsafe.Slice((*byte)(unsafe.Pointer(&w[1])), 16)[:n:n], nil
	}
	n, off := w[0], w[1]
	if n > 1<<40 || !o.seg.Holds(off, n) {
		return nil, o.corrupt("a key of %d bytes at offset %d, outside the segment", n, off)
	}
	return unsafe.Slice((*byte)(o.at(off)), n), nil
}

// cmpKey compares the stored key at slot with k.
func (o *mapOp[K, V]) cmpKey(slot unsafe.Pointer, k *K) (int, error) {
	if o.g.str {
		b, err := o.slotBytes(slot)
		if err != nil {
			return 0, err
		}
		s := *(*string)(unsafe.Pointer(k))
		return bytes.Compare(b, unsafe.Slice(unsafe.StringData(s), len(s))), nil
	}
	return o.g.cmpFixed(slot, unsafe.Pointer(k)), nil
}

// search is the first index in node nd (n keys) whose key is not below
// k, and whether it equals k.
func (o *mapOp[K, V]) search(nd uint64, n int, k *K) (int, bool, error) {
	if g := o.g; g.count == 1 && g.ks == 8 && !g.str {
		switch g.kind {
		case kUint64:
			return searchWords(o.key(nd, 0), n, *(*uint64)(unsafe.Pointer(k)), func(a, b uint64) bool { return a < b })
		case kInt64:
			return searchWords(o.key(nd, 0), n, *(*uint64)(unsafe.Pointer(k)), func(a, b uint64) bool { return int64(a) < int64(b) })
		}
	}
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		c, err := o.cmpKey(o.key(nd, mid), k)
		if err != nil {
			return 0, false, err
		}
		if c < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < n {
		c, err := o.cmpKey(o.key(nd, lo), k)
		if err != nil {
			return 0, false, err
		}
		return lo, c == 0, nil
	}
	return lo, false, nil
}

// searchWords is search over n 8-byte keys at keys, written out for the
// commonest key types: no call per comparison.
func searchWords(keys unsafe.Pointer, n int, k uint64, less func(a, b uint64) bool) (int, bool, error) {
	ws := unsafe.Slice((*uint64)(keys), n)
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if less(ws[mid], k) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < n && ws[lo] == k, nil
}

// pathEnt is a node on the way from the root to a leaf, and the index of
// the child taken (for the leaf: the key's position).
type pathEnt struct {
	nd  uint64
	n   int
	idx int
}

// descend walks from the root to the leaf where k is or would be.
func (o *mapOp[K, V]) descend(k *K, path *[maxMapDepth]pathEnt) (depth int, found bool, err error) {
	if o.g.word {
		nd, _, d, found, bad := o.walk(unsafe.Pointer(k), path)
		if bad {
			return 0, false, o.badNode(nd, d)
		}
		return d, found, nil
	}
	nd := o.m.root
	for d := 0; ; d++ {
		if d == maxMapDepth {
			return 0, false, o.corrupt("a tree deeper than %d levels", maxMapDepth)
		}
		n, leaf, err := o.node(nd)
		if err != nil {
			return 0, false, err
		}
		i, eq, err := o.search(nd, n, k)
		if err != nil {
			return 0, false, err
		}
		if leaf {
			path[d] = pathEnt{nd, n, i}
			return d + 1, eq, nil
		}
		if eq {
			i++ // a separator equal to k: k is in the right subtree
		}
		path[d] = pathEnt{nd, n, i}
		nd = *o.child(nd, i)
	}
}

// walk is walkWord for the key at k (g.word), from the root.
func (o *mapOp[K, V]) walk(k unsafe.Pointer, path *[maxMapDepth]pathEnt) (leaf uint64, i, depth int, found, bad bool) {
	if o.g.signed {
		return walkWord(o.seg, o.base, o.g, o.m.root, *(*int64)(k), path)
	}
	return walkWord(o.seg, o.base, o.g, o.m.root, *(*uint64)(k), path)
}

// badNode is the error for the node at off that walkWord refused at
// depth d.
func (o *mapOp[K, V]) badNode(off uint64, d int) error {
	if d == maxMapDepth {
		return o.corrupt("a tree deeper than %d levels", maxMapDepth)
	}
	if _, _, err := o.node(off); err != nil {
		return err
	}
	return o.corrupt("a node at offset %d that does not fit the segment", off)
}

// walkWord walks a tree whose keys are one 64-bit integer (g.word) from
// the root nd to the leaf where k is or would be, filling path if it is
// not nil. A node below the top levels is not in the cache: rather than
// one miss after another (the header, then each key a binary search
// visits, then the child or value), it loads a word of each of the
// node's cache lines first, so that the misses overlap, then searches
// the keys without a branch (lowerWord, or searchWord's vector compare).
// It checks each node as node does. It is written for the walk's
// latency: a generic function of the key's Go type (the comparison is the
// machine's), not a method of mapOp, every test but the search a branch
// that is predicted.
//
// Where the machine has AVX-512 and the nodes hold at most 32 keys (every
// Map of one-word keys and values up to 8 bytes), walkAVX512 walks the
// whole way in one call: about 12 ns a level less than the loop below
// (Get of a hot key at depth 5: 59 -> 44 ns). Whatever it finds odd (a
// node outside the bound this process knows, misaligned, over its
// capacity, a walk too deep) it leaves to the loop below, which walks
// again from the root and says what is wrong.
func walkWord[T uint64 | int64](seg *mapped.Segment, base unsafe.Pointer, g *mapGeo, nd uint64, k T, path *[maxMapDepth]pathEnt) (leaf uint64, i, depth int, found, bad bool) {
	if g.walk.asm {
		leaf, i, d, res := walkAVX512(base, seg.Bound(), nd, uint64(k), &g.walk, path)
		if res < 2 {
			return leaf, i, d, res == 1, false
		}
	}
	top := g.top
	for d := 0; d < maxMapDepth; d++ {
		// Every node fits the larger size: the usual case, one check.
		// Otherwise a node must fit the smaller, and its own once its
		// header says which it is.
		if nd%8 != 0 || !seg.Holds(nd, uint64(g.maxSize)) {
			if !fitsNode(seg, g, nd) {
				return nd, 0, d, false, true
			}
		}
		p := unsafe.Add(base, nd)
		if g.minSize >= 8*64 {
			t := *(*uint64)(unsafe.Add(p, 64)) + *(*uint64)(unsafe.Add(p, 128)) + *(*uint64)(unsafe.Add(p, 192)) +
				*(*uint64)(unsafe.Add(p, 256)) + *(*uint64)(unsafe.Add(p, 320)) + *(*uint64)(unsafe.Add(p, 384)) +
				*(*uint64)(unsafe.Add(p, 448))
			if t == touchMagic {
				touchSink.Add(1) // never, or nearly: it keeps the loads above
			}
		} else {
			var t uint64
			for off := uintptr(64); off < g.minSize; off += 64 {
				t += *(*uint64)(unsafe.Add(p, off))
			}
			if t == touchMagic {
				touchSink.Add(1)
			}
		}
		h := *(*uint64)(p)
		n := int(h & 0xffff)
		ws := unsafe.Add(p, nodeHdr)
		if h&nodeLeaf != 0 {
			if n > g.leafCap {
				return nd, 0, d, false, true
			}
			i := searchWord(ws, n, top, g.walk.leafChunks, k, false)
			if path != nil {
				path[d] = pathEnt{nd, n, i}
			}
			return nd, i, d + 1, i < n && *(*T)(unsafe.Add(ws, i*8)) == k, false
		}
		if n > g.innerCap {
			return nd, 0, d, false, true
		}
		i := searchWord(ws, n, top, g.walk.innerChunks, k, true) // the child to take
		if path != nil {
			path[d] = pathEnt{nd, n, i}
		}
		nd = *(*uint64)(unsafe.Add(p, g.childOff+uintptr(i)*8))
	}
	return nd, 0, maxMapDepth, false, true
}

// fitsNode reports whether the node at nd, which does not fit the larger
// node size, fits its own: walkWord's check at the end of the segment.
func fitsNode(seg *mapped.Segment, g *mapGeo, nd uint64) bool {
	if nd%8 != 0 || !seg.Holds(nd, uint64(g.minSize)) {
		return false
	}
	size := g.inSize
	if *(*uint64)(unsafe.Add(seg.Base(), nd))&nodeLeaf != 0 {
		size = g.leafSize
	}
	return seg.Holds(nd, uint64(size))
}

// lowerWord is the number of the n sorted keys at ws below k (with le:
// at or below k): a binary search of a fixed number of steps (top,
// top/2, ... 1; top a power of 2 above n/2) without a branch. A word
// past the n keys is never compared (its index is clamped to the last
// key's); unsorted keys give some count in [0, n].
func lowerWord[T uint64 | int64](ws unsafe.Pointer, n, top int, k T, le bool) int {
	i := 0
	for step := top; step > 0; step >>= 1 {
		j := i + step
		w := *(*T)(unsafe.Add(ws, (min(j, n)-1)*8))
		below := w < k
		if le {
			below = w <= k
		}
		i += step & -(bit(below) & bit(j <= n))
	}
	return i
}

// searchWord is lowerWord's count, with AVX-512 where the machine has it:
// the n keys at ws (chunks groups of 8 words) compared with k at once,
// instead of a binary search's chain of dependent loads. Only the n keys
// are read.
func searchWord[T uint64 | int64](ws unsafe.Pointer, n, top, chunks int, k T, le bool) int {
	if !haveAVX512 {
		return lowerWord(ws, n, top, k, le)
	}
	maxT := ^T(0)
	signed := maxT < 0
	if signed {
		maxT ^= T(1) << 63
	}
	if le {
		// At or below k is below k+1, and every key is at or below
		// the greatest.
		if k == maxT {
			return n
		}
		k++
	}
	return countBelowAVX512(ws, n, uint64(k), signed, chunks)
}

func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// touchSink and touchMagic keep walkWord's loads: the compiler cannot
// drop a load whose value a branch tests.
var touchSink atomic.Uint64

const touchMagic = 0x9e3779b97f4a7c15

func (o *mapOp[K, V]) checkKey(method string, k *K) error {
	if o.g.isNaN(unsafe.Pointer(k)) {
		return fmt.Errorf("mapstore: objects.%s.%s in %s: a NaN key is not a key: %w", o.typ, method, o.seg.Name(), ErrInvalidKey)
	}
	return nil
}

// Len is the number of keys.
func (m *Map[K, V]) Len() int {
	seg := segFor(unsafe.Pointer(m), mapName, "Len")
	if m.root == 0 {
		return 0
	}
	if m.n > uint64(seg.Size()) {
		panic(damaged(seg, mapName, unsafe.Pointer(m), "a count of %d keys", m.n))
	}
	return int(m.n)
}

// Get returns a pointer to k's value, in place (valid until the next
// change of the map), and whether k is there.
func (m *Map[K, V]) Get(k K) (*V, bool) {
	if g, err := mapGeoOf[K, V](); err == nil && g.word {
		// The common case, written for its latency: no mapOp.
		seg := segFor(unsafe.Pointer(m), mapName, "Get")
		if m.root == 0 {
			return nil, false
		}
		var nd uint64
		var i, d int
		var found, bad bool
		if g.signed {
			nd, i, d, found, bad = walkWord(seg, seg.Base(), g, m.root, *(*int64)(unsafe.Pointer(&k)), nil)
		} else {
			nd, i, d, found, bad = walkWord(seg, seg.Base(), g, m.root, *(*uint64)(unsafe.Pointer(&k)), nil)
		}
		if bad {
			o, _ := m.op("Get")
			panic(o.badNode(nd, d))
		}
		if !found {
			return nil, false
		}
		return (*V)(unsafe.Add(seg.Base(), nd+uint64(g.valOff)+uint64(i)*uint64(g.vs))), true
	}
	o, err := m.op("Get")
	if err != nil {
		panic(err)
	}
	if m.root == 0 {
		return nil, false
	}
	if o.g.isNaN(unsafe.Pointer(&k)) {
		return nil, false
	}
	var path [maxMapDepth]pathEnt
	d, found, err := o.descend(&k, &path)
	if err != nil {
		panic(err)
	}
	if !found {
		return nil, false
	}
	leaf := path[d-1]
	return (*V)(o.val(leaf.nd, leaf.idx)), true
}

// Has reports whether k is in the map.
func (m *Map[K, V]) Has(k K) bool {
	_, ok := m.Get(k)
	return ok
}

// Set makes k's value v: a new key is inserted, an existing one's value
// replaced (what the old value owns is freed).
func (m *Map[K, V]) Set(k K, v V) error {
	_, _, err := m.put("Set", k, &v, true)
	return err
}

// GetOrInsert returns a pointer to k's value, in place (valid until the
// next change of the map), inserting a zero value first if k is absent;
// inserted says which. Build a nested value where it lies through the
// pointer.
func (m *Map[K, V]) GetOrInsert(k K) (v *V, inserted bool, err error) {
	return m.put("GetOrInsert", k, nil, false)
}

// put inserts k (with *v, or zero), or with overwrite replaces an
// existing key's value.
func (m *Map[K, V]) put(method string, k K, v *V, overwrite bool) (*V, bool, error) {
	var o mapOp[K, V]
	if err := m.opInto(&o, method); err != nil {
		return nil, false, err
	}
	if err := writable(o.seg, mapName, method); err != nil {
		return nil, false, err
	}
	if err := o.checkKey(method, &k); err != nil {
		return nil, false, err
	}
	if o.g.word && m.root != 0 {
		// The common cases first, without a path: a key that is there,
		// and a new one that goes into its leaf in place.
		nd, i, d, found, bad := o.walk(unsafe.Pointer(&k), nil)
		switch {
		case bad:
			return nil, false, o.badNode(nd, d)
		case found && !overwrite:
			return (*V)(o.val(nd, i)), false, nil
		case !found:
			leaf := pathEnt{nd, int(*(*uint64)(o.at(nd)) & 0xffff), i} // checked by walk
			if o.g.inPlace(leaf) {
				res, err := o.insertInPlace(method, leaf, &k, v)
				return res, err == nil, err
			}
		}
	}
	var path [maxMapDepth]pathEnt
	depth, found := 0, false
	if m.root != 0 {
		var err error
		if depth, found, err = o.descend(&k, &path); err != nil {
			return nil, false, err
		}
		if found && !overwrite {
			leaf := path[depth-1]
			return (*V)(o.val(leaf.nd, leaf.idx)), false, nil
		}
	}
	if !found && depth > 0 && o.g.inPlace(path[depth-1]) {
		res, err := o.insertInPlace(method, path[depth-1], &k, v)
		return res, err == nil, err
	}
	if !found && depth > 1 && o.g.splitInPlace(path[depth-2], path[depth-1]) {
		res, err := o.splitLeaf(method, path[depth-2], path[depth-1], &k, v)
		return res, err == nil, err
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return nil, false, err
	}
	if found && len(shape) == 0 && o.g.vs <= 256 {
		// A plain value replaced in place (saved first, so a rollback puts
		// it back); one that owns blocks goes with a new leaf below.
		leaf := path[depth-1]
		p := o.val(leaf.nd, leaf.idx)
		return (*V)(p), false, o.replace(method, p, v, shape)
	}
	var nv *V
	if v != nil {
		// A copy for the builder, which the compiler sees keep it: on the
		// Go heap, where v (Set's argument) would be on every call.
		c := *v
		nv = &c
	}
	var l mapped.Lane
	err = l.Begin(o.seg)
	if err != nil {
		return nil, false, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	b := builder[K, V]{o: &o, l: &l}
	res, err := b.insert(path[:depth], &k, nv, found, shape)
	if err != nil {
		l.Abort()
		return nil, false, o.laneErr(method, err)
	}
	if err := l.Commit(); err != nil {
		return nil, false, err
	}
	return res, !found, nil
}

// laneRoom is the bytes of entries a mapped.Lane records (its
// ErrLaneFull says so; a test checks that they agree).
const laneRoom = 504

// inPlace reports whether a new key goes into leaf (the end of a
// descend's path) in place: the leaf has room, and the lane can save
// what the insert changes there (laneSaves).
func (g *mapGeo) inPlace(leaf pathEnt) bool {
	return leaf.n < g.leafCap && g.laneSaves(leaf.n-leaf.idx) <= laneRoom
}

// laneSaves is the bytes of lane record an insert in place takes that
// moves moved keys and values up by one: a save of the map's count, of
// the leaf's header word, of the keys and of the values that move (each
// entry two words and its bytes), and an allocation for a string key
// that does not fit its slot.
func (g *mapGeo) laneSaves(moved int) int {
	n := 2 * (16 + 8)
	if moved > 0 {
		n += 16 + moved*int(g.ks)
		if g.vs > 0 {
			n += 16 + (moved*int(g.vs)+7)&^7
		}
	}
	if g.str {
		n += 16
	}
	return n
}

// insertInPlace inserts k (value *v, or zero) into leaf, which has room,
// at leaf.idx: the keys and values from there move up by one. The lane
// saves what changes first (the count of the map and of the leaf, the
// keys and values that move; the slot past the leaf's count is not one
// of its keys), so that a rollback puts the leaf back as it was. It
// returns a pointer to the new value.
func (o *mapOp[K, V]) insertInPlace(method string, leaf pathEnt, k *K, v *V) (*V, error) {
	g, m := o.g, o.m
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return nil, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	moved := leaf.n - leaf.idx
	hdr := o.at(leaf.nd)
	kp, vp := o.key(leaf.nd, leaf.idx), o.val(leaf.nd, leaf.idx)
	kb, vb := moved*int(g.ks), moved*int(g.vs)
	slot := unsafe.Pointer(k) // a slot is a fixed-size key's bytes, padded
	if g.str || unsafe.Sizeof(*k) != g.ks {
		b := builder[K, V]{o: o, l: &l}
		slot, err = b.makeSlot(&b.buf[0], k)
	}
	if err == nil {
		err = l.Save(unsafe.Pointer(&m.n), 8)
	}
	if err == nil {
		err = l.Save(hdr, 8)
	}
	if err == nil && kb > 0 {
		err = l.Save(kp, kb)
	}
	if err == nil && vb > 0 {
		err = l.Save(vp, vb)
	}
	if err != nil {
		l.Abort()
		return nil, o.laneErr(method, err)
	}
	if inPlaceHook != nil {
		inPlaceHook("saved")
	}
	if kb > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Add(kp, g.ks)), kb), unsafe.Slice((*byte)(kp), kb))
	}
	if vb > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Add(vp, g.vs)), vb), unsafe.Slice((*byte)(vp), vb))
	}
	copy(unsafe.Slice((*byte)(kp), g.ks), unsafe.Slice((*byte)(slot), g.ks))
	setValue(vp, v)
	if inPlaceHook != nil {
		inPlaceHook("written")
	}
	*(*uint64)(hdr)++ // the count, in bits 0-15, is below the leaf's capacity
	m.n++
	if inPlaceHook != nil {
		inPlaceHook("counted")
	}
	if err := l.Commit(); err != nil {
		return nil, err
	}
	return (*V)(vp), nil
}

// splitInPlace reports whether a new key that goes into leaf, which is
// full, splits it in place (splitLeaf): fixed-size keys, a parent with
// room for the separator, and a lane that can save what the split
// changes in the leaf and the parent.
func (g *mapGeo) splitInPlace(parent, leaf pathEnt) bool {
	if g.str || leaf.n != g.leafCap || parent.n >= g.innerCap {
		return false
	}
	n := 3*(16+8) + 16 // the map's count, the two headers, the new leaf
	if h := (leaf.n + 1) / 2; leaf.idx < h {
		moved := h - leaf.idx // the left half's keys and values that move
		n += 16 + moved*int(g.ks)
		if g.vs > 0 {
			n += 16 + (moved*int(g.vs)+7)&^7
		}
	}
	if moved := parent.n - parent.idx; moved > 0 {
		n += 16 + moved*int(g.ks) + 16 + moved*8
	}
	return n <= laneRoom
}

// splitLeaf inserts k (value *v, or zero) at leaf.idx of leaf, which is
// full, by splitting it in place: the leaf keeps the first half of its
// keys with k, a new leaf takes the second half, and parent (which has
// room) gets the new leaf's first key and the new leaf after leaf. What
// changes in the leaf and the parent (their counts, the keys and values
// and children that move) is saved in the lane first, and the new leaf
// is the lane's allocation, so a rollback puts both back and frees it.
// It is what builder.insert does for the same case, without writing the
// leaf and the parent anew (three allocations and two frees, each under
// the segment lock). It returns a pointer to the new value.
func (o *mapOp[K, V]) splitLeaf(method string, parent, leaf pathEnt, k *K, v *V) (*V, error) {
	g, m := o.g, o.m
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return nil, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	n, pos := leaf.n, leaf.idx
	h := (n + 1) / 2 // the left leaf's keys, with k
	ks, vs := int(g.ks), int(g.vs)
	slot := unsafe.Pointer(k) // a fixed-size key's bytes, padded
	if unsafe.Sizeof(*k) != g.ks {
		b := builder[K, V]{o: o, l: &l}
		slot, err = b.makeSlot(&b.buf[0], k)
	}
	save := func(p unsafe.Pointer, size int) {
		if err == nil && size > 0 {
			err = l.Save(p, size)
		}
	}
	save(unsafe.Pointer(&m.n), 8)
	save(o.at(leaf.nd), 8)
	if pos < h {
		save(o.key(leaf.nd, pos), (h-pos)*ks)
		save(o.val(leaf.nd, pos), (h-pos)*vs)
	}
	pn, pi := parent.n, parent.idx
	save(o.at(parent.nd), 8)
	save(o.key(parent.nd, pi), (pn-pi)*ks)
	save(unsafe.Pointer(o.child(parent.nd, pi+1)), (pn-pi)*8)
	var right uint64
	if err == nil {
		b := builder[K, V]{o: o, l: &l}
		right, err = b.newNode(true)
	}
	if err != nil {
		l.Abort()
		return nil, o.laneErr(method, err)
	}
	if splitHook != nil {
		splitHook("saved")
	}
	keys := func(nd uint64, i, c int) []byte { return unsafe.Slice((*byte)(o.key(nd, i)), c*ks) }
	vals := func(nd uint64, i, c int) []byte { return unsafe.Slice((*byte)(o.val(nd, i)), c*vs) }
	var res unsafe.Pointer
	if pos < h {
		// The right leaf is old [h-1, n); the left one old [0, pos), k,
		// old [pos, h-1).
		copy(keys(right, 0, n-h+1), keys(leaf.nd, h-1, n-h+1))
		copy(vals(right, 0, n-h+1), vals(leaf.nd, h-1, n-h+1))
		copy(keys(leaf.nd, pos+1, h-1-pos), keys(leaf.nd, pos, h-1-pos))
		copy(vals(leaf.nd, pos+1, h-1-pos), vals(leaf.nd, pos, h-1-pos))
		copy(keys(leaf.nd, pos, 1), unsafe.Slice((*byte)(slot), ks))
		res = o.val(leaf.nd, pos)
	} else {
		// The left leaf keeps old [0, h); the right one is old [h, pos),
		// k, old [pos, n).
		copy(keys(right, 0, pos-h), keys(leaf.nd, h, pos-h))
		copy(vals(right, 0, pos-h), vals(leaf.nd, h, pos-h))
		copy(keys(right, pos-h, 1), unsafe.Slice((*byte)(slot), ks))
		copy(keys(right, pos-h+1, n-pos), keys(leaf.nd, pos, n-pos))
		copy(vals(right, pos-h+1, n-pos), vals(leaf.nd, pos, n-pos))
		res = o.val(right, pos-h)
	}
	setValue(res, v)
	lh := (*uint64)(o.at(leaf.nd))
	*(*uint64)(o.at(right)) = *lh&^0xffff | uint64(n+1-h)
	*lh = *lh&^0xffff | uint64(h)
	if splitHook != nil {
		splitHook("written")
	}
	// The parent: the right leaf's first key before key pi, the right
	// leaf after child pi (the left one, where it was).
	copy(keys(parent.nd, pi+1, pn-pi), keys(parent.nd, pi, pn-pi))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(o.child(parent.nd, pi+2))), (pn-pi)*8),
		unsafe.Slice((*byte)(unsafe.Pointer(o.child(parent.nd, pi+1))), (pn-pi)*8))
	copy(keys(parent.nd, pi, 1), keys(right, 0, 1))
	*o.child(parent.nd, pi+1) = right
	ph := (*uint64)(o.at(parent.nd))
	*ph = *ph&^0xffff | uint64(pn+1)
	m.n++
	if splitHook != nil {
		splitHook("linked")
	}
	if err := l.Commit(); err != nil {
		return nil, err
	}
	return (*V)(res), nil
}

// splitHook is inPlaceHook for splitLeaf: "saved" (the lane holds what
// changes and the new leaf, nothing changed yet), "written" (both leaves
// written) and "linked" (the parent and the map's count too, before the
// commit).
var splitHook func(step string)

// setValue copies *v's bytes to p, a value slot of a leaf, or zeros it
// where v is nil (GetOrInsert's new value).
func setValue[V any](p unsafe.Pointer, v *V) {
	dst := unsafe.Slice((*byte)(p), unsafe.Sizeof(*v))
	if v != nil {
		copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(v)), len(dst)))
	} else {
		clear(dst)
	}
}

// inPlaceHook, when not nil, is called at the steps of insertInPlace:
// "saved" (the lane holds what changes, nothing changed yet), "written"
// (the keys and values moved, the new ones written) and "counted" (the
// counts too, before the commit). Tests set it to kill the process
// there; it is nil in production, where it costs a load and a compare.
var inPlaceHook func(step string)

// laneErr says what an ErrLaneFull of a map's call means.
func (o *mapOp[K, V]) laneErr(method string, err error) error {
	if errors.Is(err, mapped.ErrLaneFull) {
		return fmt.Errorf("mapstore: objects.%s.%s in %s: the change touches more than a lane records: %w", o.typ, method, o.seg.Name(), err)
	}
	return err
}

// replace sets the value at p to *v in a lane: a plain value saved and
// written; a value that owns blocks written after the commit, the old
// one's blocks freed first.
func (o *mapOp[K, V]) replace(method string, p unsafe.Pointer, v *V, shape mapped.Shape) error {
	var l mapped.Lane
	err := l.Begin(o.seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	vb := unsafe.Slice((*byte)(unsafe.Pointer(v)), o.g.vs)
	if len(shape) == 0 {
		err = l.Save(p, int(o.g.vs))
		if err == nil {
			copy(unsafe.Slice((*byte)(p), o.g.vs), vb)
		}
	} else {
		err = l.Drop(p, 1, int(o.g.vs), shape)
		if err == nil {
			err = l.Write(p, vb)
		}
	}
	if err != nil {
		l.Abort()
		return o.laneErr(method, err)
	}
	return l.Commit()
}

// Delete removes k and frees what its value owns; it reports whether k
// was there.
func (m *Map[K, V]) Delete(k K) (bool, error) {
	o, err := m.op("Delete")
	if err != nil {
		return false, err
	}
	if err := writable(o.seg, mapName, "Delete"); err != nil {
		return false, err
	}
	if m.root == 0 || o.g.isNaN(unsafe.Pointer(&k)) {
		return false, nil
	}
	var path [maxMapDepth]pathEnt
	depth, found, err := o.descend(&k, &path)
	if err != nil || !found {
		return false, err
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
	b := builder[K, V]{o: &o, l: &l}
	if err := b.remove(path[:depth], shape); err != nil {
		l.Abort()
		return false, o.laneErr("Delete", err)
	}
	return true, l.Commit()
}

// Clear removes every key, freeing the nodes and what the values own.
func (m *Map[K, V]) Clear() error {
	o, err := m.op("Clear")
	if err != nil {
		return err
	}
	if err := writable(o.seg, mapName, "Clear"); err != nil {
		return err
	}
	if m.root == 0 {
		return nil
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return err
	}
	// After the commit: the root word is dropped (every node, key and
	// value freed, the word zeroed), then the count.
	var l mapped.Lane
	err = l.Begin(o.seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	var zero Map[K, V]
	sh := zero.containerShape(0, nil, shape)
	if err := l.Drop(unsafe.Pointer(m), 1, int(unsafe.Sizeof(*m)), sh); err != nil {
		l.Abort()
		return err
	}
	if err := l.Store(&m.n, 0); err != nil {
		l.Abort()
		return err
	}
	return l.Commit()
}

// All iterates over the keys in order, with pointers to their values.
// The map must not change during the loop.
func (m *Map[K, V]) All() iter.Seq2[K, *V] {
	return m.iterate("All", nil, nil)
}

// Range iterates, in order, over the keys k with from <= k < to (none
// if a bound is a NaN).
func (m *Map[K, V]) Range(from, to K) iter.Seq2[K, *V] {
	return m.iterate("Range", &from, &to)
}

// Min is the least key and its value; ok is false for an empty map.
func (m *Map[K, V]) Min() (k K, v *V, ok bool) {
	for k, v := range m.iterate("Min", nil, nil) {
		return k, v, true
	}
	return k, nil, false
}

// Max is the greatest key and its value; ok is false for an empty map.
func (m *Map[K, V]) Max() (k K, v *V, ok bool) {
	o, err := m.op("Max")
	if err != nil {
		panic(err)
	}
	nd := m.root
	if nd == 0 {
		return k, nil, false
	}
	for d := 0; d < maxMapDepth; d++ {
		n, leaf, err := o.node(nd)
		if err != nil {
			panic(err)
		}
		if leaf {
			if n == 0 {
				return k, nil, false
			}
			return o.keyOf(nd, n-1), (*V)(o.val(nd, n-1)), true
		}
		nd = *o.child(nd, n)
	}
	panic(o.corrupt("a tree deeper than %d levels", maxMapDepth))
}

// keyOf is the key at index i of node nd as a K (a string is copied).
func (o *mapOp[K, V]) keyOf(nd uint64, i int) K {
	var k K
	if o.g.str {
		b, err := o.slotBytes(o.key(nd, i))
		if err != nil {
			panic(err)
		}
		*(*string)(unsafe.Pointer(&k)) = string(b)
		return k
	}
	return *(*K)(o.key(nd, i))
}

func (m *Map[K, V]) iterate(method string, from, to *K) iter.Seq2[K, *V] {
	return func(yield func(K, *V) bool) {
		o, err := m.op(method)
		if err != nil {
			panic(err)
		}
		if m.root == 0 || from != nil && o.g.isNaN(unsafe.Pointer(from)) || to != nil && o.g.isNaN(unsafe.Pointer(to)) {
			return // a NaN bound bounds nothing: no key is at or after it, or before it
		}
		var stack [maxMapDepth]pathEnt
		sp := 0
		nd := m.root
		// Down to the first leaf that may hold from.
		for {
			if sp == maxMapDepth {
				panic(o.corrupt("a tree deeper than %d levels", maxMapDepth))
			}
			n, leaf, err := o.node(nd)
			if err != nil {
				panic(err)
			}
			i := 0
			if from != nil {
				var eq bool
				if i, eq, err = o.search(nd, n, from); err != nil {
					panic(err)
				}
				if eq && !leaf {
					i++
				}
			}
			stack[sp] = pathEnt{nd, n, i}
			if leaf {
				break
			}
			sp++
			nd = *o.child(nd, i)
		}
		steps := uint64(o.seg.Size()) / 8
		for {
			top := &stack[sp]
			if top.idx > top.n || (top.idx == top.n && sp == len(stack)) {
				panic(o.corrupt("an iteration out of its node"))
			}
			_, leaf, err := o.node(top.nd)
			if err != nil {
				panic(err)
			}
			if leaf && top.idx < top.n {
				if to != nil {
					c, err := o.cmpKey(o.key(top.nd, top.idx), to)
					if err != nil {
						panic(err)
					}
					if c >= 0 {
						return
					}
				}
				if !yield(o.keyOf(top.nd, top.idx), (*V)(o.val(top.nd, top.idx))) {
					return
				}
				top.idx++
				continue
			}
			// This node is done: up, then down the next child.
			for {
				if sp == 0 {
					return
				}
				sp--
				p := &stack[sp]
				p.idx++
				if p.idx <= p.n {
					break
				}
			}
			for {
				if steps == 0 {
					panic(o.corrupt("an iteration that does not end"))
				}
				steps--
				p := stack[sp]
				c := *o.child(p.nd, p.idx)
				n, leaf, err := o.node(c)
				if err != nil {
					panic(err)
				}
				sp++
				if sp == maxMapDepth {
					panic(o.corrupt("a tree deeper than %d levels", maxMapDepth))
				}
				stack[sp] = pathEnt{c, n, 0}
				if leaf {
					break
				}
			}
		}
	}
}

func cmp3[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
