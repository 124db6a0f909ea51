package mapped

import (
	"encoding/binary"
	"sync/atomic"
)

// Shape says which words of a value in the segment own blocks, so that a
// Lane's Drop (and recovery, in a process that may not know the Go type)
// can free everything a value holds. It is built with the methods below,
// one item per owning field; an empty Shape owns nothing.
//
// Items (offsets relative to the value; uvarints unless said):
//
//	'B' off                          a word holding an owned block (0: none)
//	'V' off stride len(elem) elem    a vector: the word at off holds its
//	                                 block (0: empty, whatever else says),
//	                                 the word at off+8 its length; each
//	                                 element (stride bytes) owns elem
//	'L' off valueOff len(elem) elem  a list: the word at off holds its
//	                                 first node (0: empty); a node's first
//	                                 word holds the next node, its value
//	                                 at valueOff owns elem
//	'A' off count stride len(elem) elem   count values of stride bytes
//	'S' off                          a key slot: the word at off says
//	                                 whether its bytes are inline (bit
//	                                 63); when not, the word at off+8
//	                                 holds an owned block
//	'G' off group keyOff keyStride valOff valStride len(key) key len(val) val
//	                                 a hash table: the word at off holds
//	                                 its table block (0: none), the word
//	                                 at off+16 its group count G; the
//	                                 block's G groups (group bytes
//	                                 each) start at the
//	                                 first 64-byte boundary 8 bytes or
//	                                 more into it; a group's first word
//	                                 holds its 7 slots' control bytes
//	                                 (little-endian), its slot j's key
//	                                 (owning key) is at keyOff +
//	                                 j*keyStride and its value (owning
//	                                 val) at valOff + j*valStride; a slot
//	                                 whose control byte has bit 7 set
//	                                 holds an entry
//	'W' off slot tomb len(val) val   a hash table of one-word keys: the
//	                                 word at off holds its table block
//	                                 (0: none), the word at off+16 its
//	                                 slot count N; the block's second word
//	                                 holds flags (bit 0: key 0 is in the
//	                                 table, its value, owning val, at 16
//	                                 bytes into the block; bit 1: key tomb
//	                                 is, its value at slot+8); N slots of
//	                                 slot bytes start at the first 64-byte
//	                                 boundary 2*slot bytes or more into
//	                                 it; a slot whose first word (its key)
//	                                 is neither 0 nor tomb holds an entry,
//	                                 its value (owning val) at 8
//	'H' off slot keyOff valOff len(key) key len(val) val
//	                                 the hash table format before 'G',
//	                                 which no build writes any more (its
//	                                 drops in an older build's lane
//	                                 records still run): the word at off
//	                                 holds its table block (0: none), the
//	                                 word at off+16 its slots (slot bytes
//	                                 each); a slot whose first word is 2
//	                                 or more holds a key owning key at
//	                                 keyOff and a value owning val
//	'T' off tree                     a B-tree: the word at off holds its
//	                                 root node (0: empty); tree is the
//	                                 node geometry (TreeGeometry)
//
// Dropping frees the innermost blocks first and zeroes each owning word
// in the same crash-atomic step that frees its block (a list's first-node
// word takes the next node instead), so that a drop cut short by a crash
// resumes where it stopped.
type Shape []byte

// Block adds a word at off that holds an owned block.
func (sh Shape) Block(off uintptr) Shape {
	sh = append(sh, 'B')
	return binary.AppendUvarint(sh, uint64(off))
}

// Vector adds a vector at off whose elements, stride bytes each, own elem.
func (sh Shape) Vector(off, stride uintptr, elem Shape) Shape {
	sh = append(sh, 'V')
	sh = binary.AppendUvarint(sh, uint64(off))
	sh = binary.AppendUvarint(sh, uint64(stride))
	return appendSub(sh, elem)
}

// List adds a list at off whose nodes hold a value at valueOff that owns
// elem.
func (sh Shape) List(off, valueOff uintptr, elem Shape) Shape {
	sh = append(sh, 'L')
	sh = binary.AppendUvarint(sh, uint64(off))
	sh = binary.AppendUvarint(sh, uint64(valueOff))
	return appendSub(sh, elem)
}

// KeySlot adds a key slot at off (see the 'S' item).
func (sh Shape) KeySlot(off uintptr) Shape {
	sh = append(sh, 'S')
	return binary.AppendUvarint(sh, uint64(off))
}

// TreeGeometry is how a B-tree's nodes are laid out, for Shape.Tree. A
// node's first word holds its count of keys (bits 0-15) and whether it
// is a leaf (bit 63). Keys (KeyStride bytes each, owning Key) start at
// KeyOff in every node; a leaf's values (ValStride bytes each, owning
// Val) at ValOff; an internal node's count+1 children (words) at
// ChildOff. A node holds at most MaxKeys keys.
type TreeGeometry struct {
	KeyOff, KeyStride, ValOff, ValStride, ChildOff uintptr
	MaxKeys                                        int
	Key, Val                                       Shape
}

// Tree adds a B-tree whose root is the word at off.
func (sh Shape) Tree(off uintptr, g TreeGeometry) Shape {
	sh = append(sh, 'T')
	for _, v := range []uint64{uint64(off), uint64(g.KeyOff), uint64(g.KeyStride), uint64(g.ValOff), uint64(g.ValStride), uint64(g.ChildOff), uint64(g.MaxKeys)} {
		sh = binary.AppendUvarint(sh, v)
	}
	sh = appendSub(sh, g.Key)
	return appendSub(sh, g.Val)
}

// HashTable adds a hash table (the 'G' item) whose table block is the
// word at off and whose group count G is the word at off+16: G groups
// of group bytes from the first 64-byte boundary at
// least 8 bytes into the block, each a word of 7 control bytes, then its
// slots' keys at keyOff (keyStride bytes apart, owning key) and values
// at valOff (valStride apart, owning val); a slot whose control byte has
// bit 7 set holds an entry.
func (sh Shape) HashTable(off, group, keyOff, keyStride, valOff, valStride uintptr, key, val Shape) Shape {
	sh = append(sh, 'G')
	for _, v := range []uint64{uint64(off), uint64(group), uint64(keyOff), uint64(keyStride), uint64(valOff), uint64(valStride)} {
		sh = binary.AppendUvarint(sh, v)
	}
	sh = appendSub(sh, key)
	return appendSub(sh, val)
}

// WordTable adds a hash table of one-word keys (the 'W' item) whose table
// block is the word at off and whose slot count N is the word at off+16:
// a head (the block's second word holds flags: bit 0 says key 0 is in the
// table, its value at 16 bytes into the block, bit 1 that key tomb is, its
// value at slot+8 bytes), then N slots of slot bytes from the first
// 64-byte boundary at least 2*slot bytes into the block, each a key word
// and its value at 8 (owning val); a slot whose key is neither 0 (empty)
// nor tomb (removed) holds an entry.
func (sh Shape) WordTable(off, slot uintptr, tomb uint64, val Shape) Shape {
	sh = append(sh, 'W')
	for _, v := range []uint64{uint64(off), uint64(slot), tomb} {
		sh = binary.AppendUvarint(sh, v)
	}
	return appendSub(sh, val)
}

// Array adds count values of stride bytes at off, each owning elem.
func (sh Shape) Array(off uintptr, count int, stride uintptr, elem Shape) Shape {
	if len(elem) == 0 || count == 0 {
		return sh
	}
	sh = append(sh, 'A')
	sh = binary.AppendUvarint(sh, uint64(off))
	sh = binary.AppendUvarint(sh, uint64(count))
	sh = binary.AppendUvarint(sh, uint64(stride))
	return appendSub(sh, elem)
}

func appendSub(sh, elem Shape) Shape {
	sh = binary.AppendUvarint(sh, uint64(len(elem)))
	return append(sh, elem...)
}

// maxShapeDepth bounds the nesting a drop follows.
const maxShapeDepth = 64

// dropper frees what values own, as a Shape says. Everything it reads
// from the segment is checked: offsets against the segment's blocks, a
// vector's length against its block, a list against a step budget.
type dropper struct {
	s     *Segment
	held  bool // the segment lock is held (recovery)
	size  int64
	steps uint64 // list nodes it may still visit
}

func (d *dropper) elems(base, count, stride uint64, shape Shape, depth int) error {
	for i := uint64(0); i < count; i++ {
		if err := d.value(base+i*stride, shape, depth); err != nil {
			return err
		}
	}
	return nil
}

// shapeReader reads a Shape, failing (ok false) on a malformed one.
type shapeReader struct {
	b  Shape
	ok bool
}

func (r *shapeReader) uv() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.ok = false
		r.b = nil
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *shapeReader) sub() Shape {
	n := r.uv()
	if n > uint64(len(r.b)) {
		r.ok = false
		r.b = nil
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// word is the word at off, which must lie in the segment's blocks.
func (d *dropper) word(off uint64) (*uint64, bool) {
	if off%8 != 0 || !d.s.h.dataRange(off, 8, d.size) {
		return nil, false
	}
	return d.s.h.w(uintptr(off)), true
}

// value frees what the value at obj owns.
func (d *dropper) value(obj uint64, shape Shape, depth int) error {
	if depth > maxShapeDepth {
		return corrupt("a shape nests deeper than %d at offset %d", maxShapeDepth, obj)
	}
	r := shapeReader{b: shape, ok: true}
	for len(r.b) > 0 && r.ok {
		kind := r.b[0]
		r.b = r.b[1:]
		off := obj + r.uv()
		switch kind {
		case 'B':
			if _, ok := d.word(off); !ok {
				return corrupt("owned block word at %d is outside the segment's blocks", off)
			}
			if err := d.s.freeWord(uintptr(off), 0, d.held); err != nil {
				return err
			}
		case 'V':
			stride, elem := r.uv(), r.sub()
			if err := d.vector(off, stride, elem, depth); err != nil {
				return err
			}
		case 'L':
			valueOff, elem := r.uv(), r.sub()
			if err := d.list(off, valueOff, elem, depth); err != nil {
				return err
			}
		case 'S':
			w, ok := d.word(off)
			if !ok {
				return corrupt("key slot at %d is outside the segment's blocks", off)
			}
			if atomic.LoadUint64(w)&keyInline == 0 {
				if _, ok := d.word(off + 8); !ok {
					return corrupt("key slot at %d is outside the segment's blocks", off)
				}
				if err := d.s.freeWord(uintptr(off+8), 0, d.held); err != nil {
					return err
				}
			}
		case 'T':
			var g treeGeo
			g.keyOff, g.keyStride, g.valOff, g.valStride, g.childOff, g.maxKeys = r.uv(), r.uv(), r.uv(), r.uv(), r.uv(), r.uv()
			g.key, g.val = r.sub(), r.sub()
			if !r.ok {
				break
			}
			if err := d.tree(off, &g, depth); err != nil {
				return err
			}
		case 'G':
			var g groupGeo
			g.group, g.keyOff, g.keyStride, g.valOff, g.valStride = r.uv(), r.uv(), r.uv(), r.uv(), r.uv()
			g.key, g.val = r.sub(), r.sub()
			if !r.ok {
				break
			}
			if err := d.groupTable(off, &g, depth); err != nil {
				return err
			}
		case 'W':
			slot, tomb, val := r.uv(), r.uv(), r.sub()
			if !r.ok {
				break
			}
			if err := d.wordTable(off, slot, tomb, val, depth); err != nil {
				return err
			}
		case 'H':
			slot, keyOff, valOff := r.uv(), r.uv(), r.uv()
			key, val := r.sub(), r.sub()
			if !r.ok {
				break
			}
			if err := d.hashTable(off, slot, keyOff, valOff, key, val, depth); err != nil {
				return err
			}
		case 'A':
			count, stride, elem := r.uv(), r.uv(), r.sub()
			if count > uint64(d.size) || stride > uint64(d.size) || !d.s.h.dataRange(off, count*stride, d.size) {
				return corrupt("an array of %d values of %d bytes at %d is outside the segment's blocks", count, stride, off)
			}
			if err := d.elems(off, count, stride, elem, depth+1); err != nil {
				return err
			}
		default:
			r.ok = false
		}
	}
	if !r.ok {
		return corrupt("a malformed shape for the value at %d", obj)
	}
	return nil
}

func (d *dropper) vector(off, stride uint64, elem Shape, depth int) error {
	ref, ok := d.word(off)
	lenw, ok2 := d.word(off + 8)
	if !ok || !ok2 {
		return corrupt("vector header at %d is outside the segment's blocks", off)
	}
	data := atomic.LoadUint64(ref)
	if data == 0 {
		return nil
	}
	if len(elem) > 0 {
		n := atomic.LoadUint64(lenw)
		bsize, err := d.blockSize(data)
		if err != nil {
			return err
		}
		if stride == 0 || n > bsize/stride {
			return corrupt("vector at %d says %d elements of %d bytes in a block of %d at %d", off, n, stride, bsize, data)
		}
		if err := d.elems(data, n, stride, elem, depth+1); err != nil {
			return err
		}
	}
	return d.s.freeWord(uintptr(off), 0, d.held)
}

func (d *dropper) list(off, valueOff uint64, elem Shape, depth int) error {
	head, ok := d.word(off)
	if !ok {
		return corrupt("list header at %d is outside the segment's blocks", off)
	}
	for {
		node := atomic.LoadUint64(head)
		if node == 0 {
			return nil
		}
		if d.steps == 0 {
			return corrupt("list at %d does not end", off)
		}
		d.steps--
		next, ok := d.word(node)
		if !ok {
			return corrupt("list at %d has a node at %d, outside the segment's blocks", off, node)
		}
		if len(elem) > 0 {
			if err := d.value(node+valueOff, elem, depth+1); err != nil {
				return err
			}
		}
		if err := d.s.freeWord(uintptr(off), atomic.LoadUint64(next), d.held); err != nil {
			return err
		}
	}
}

// keyInline is the bit of a key slot's first word that says its bytes
// are inline (objects' Map keys).
const keyInline = uint64(1) << 63

type treeGeo struct {
	keyOff, keyStride, valOff, valStride, childOff, maxKeys uint64
	key, val                                                Shape
}

// tree frees a B-tree whose root word is at off: each node after what its
// keys and values own (a leaf) or its children (an internal node), each
// owning word zeroed as its block is freed, so a drop cut short resumes.
func (d *dropper) tree(off uint64, g *treeGeo, depth int) error {
	if _, ok := d.word(off); !ok {
		return corrupt("tree root word at %d is outside the segment's blocks", off)
	}
	if g.maxKeys == 0 || g.maxKeys > 1<<15 || g.keyStride > 1<<20 || g.valStride > 1<<20 {
		return corrupt("a malformed tree shape at %d", off)
	}
	return d.node(off, g, depth)
}

// node frees the subtree whose root word is at ref.
func (d *dropper) node(ref uint64, g *treeGeo, depth int) error {
	if depth > maxShapeDepth {
		return corrupt("a tree deeper than %d at offset %d", maxShapeDepth, ref)
	}
	nd := atomic.LoadUint64(d.s.h.w(uintptr(ref)))
	if nd == 0 {
		return nil
	}
	if d.steps == 0 {
		return corrupt("the tree at %d has more nodes than the segment can", ref)
	}
	d.steps--
	w, ok := d.word(nd)
	if !ok {
		return corrupt("tree node at %d is outside the segment's blocks", nd)
	}
	hdr := atomic.LoadUint64(w)
	n, leaf := hdr&0xffff, hdr>>63 != 0
	bsize, err := d.blockSize(nd)
	if err != nil {
		return err
	}
	if n > g.maxKeys {
		return corrupt("tree node at %d says %d keys, at most %d fit", nd, n, g.maxKeys)
	}
	if leaf {
		if g.keyOff+n*g.keyStride > bsize || g.valOff+n*g.valStride > bsize {
			return corrupt("tree leaf at %d: %d keys and values do not fit its %d bytes", nd, n, bsize)
		}
		for i := uint64(0); i < n; i++ {
			if len(g.key) > 0 {
				if err := d.value(nd+g.keyOff+i*g.keyStride, g.key, depth+1); err != nil {
					return err
				}
			}
			if len(g.val) > 0 {
				if err := d.value(nd+g.valOff+i*g.valStride, g.val, depth+1); err != nil {
					return err
				}
			}
		}
	} else {
		if g.childOff+(n+1)*8 > bsize {
			return corrupt("tree node at %d: %d children do not fit its %d bytes", nd, n+1, bsize)
		}
		if g.keyOff+n*g.keyStride > bsize {
			return corrupt("tree node at %d: %d keys do not fit its %d bytes", nd, n, bsize)
		}
		for i := uint64(0); i <= n; i++ {
			if err := d.node(nd+g.childOff+i*8, g, depth+1); err != nil {
				return err
			}
		}
		for i := uint64(0); i < n && len(g.key) > 0; i++ { // separators own their bytes too
			if err := d.value(nd+g.keyOff+i*g.keyStride, g.key, depth+1); err != nil {
				return err
			}
		}
	}
	return d.s.freeWord(uintptr(ref), 0, d.held)
}

// tableWords reads the header of a hash table at off: its table block's
// offset (0: none) and the word at off+16 (its group or slot count).
func (d *dropper) tableWords(off uint64) (t, n uint64, err error) {
	ref, ok := d.word(off)
	nw, ok2 := d.word(off + 16)
	if !ok || !ok2 {
		return 0, 0, corrupt("hash table header at %d is outside the segment's blocks", off)
	}
	return atomic.LoadUint64(ref), atomic.LoadUint64(nw), nil
}

// groupGeo is a 'G' hash table's layout.
type groupGeo struct {
	group, keyOff, keyStride, valOff, valStride uint64
	key, val                                    Shape
}

// groupTable frees a 'G' hash table's entries' storage, then its table.
func (d *dropper) groupTable(off uint64, g *groupGeo, depth int) error {
	t, n, err := d.tableWords(off)
	if err != nil || t == 0 {
		return err
	}
	if len(g.key)+len(g.val) > 0 {
		bsize, err := d.blockSize(t)
		if err != nil {
			return err
		}
		const big = 1 << 20
		if g.group < 8 || g.group > 16*big || g.group%8 != 0 || g.keyStride > big || g.valStride > big ||
			g.keyOff > g.group || g.valOff > g.group || g.keyOff+7*g.keyStride > g.group || g.valOff+7*g.valStride > g.group ||
			t%8 != 0 || bsize < 64 || n > (bsize-64)/g.group {
			return corrupt("hash table at %d: %d groups of %d bytes in a block of %d at %d", off, n, g.group, bsize, t)
		}
		data := (t + 8 + 63) &^ 63 // the block's first 64-byte boundary past its first word
		for grp := data; grp < data+n*g.group; grp += g.group {
			ctrl := atomic.LoadUint64(d.s.h.w(uintptr(grp)))
			for j := uint64(0); j < 7; j++ {
				if ctrl>>(8*j)&0x80 == 0 {
					continue
				}
				if len(g.key) > 0 {
					if err := d.value(grp+g.keyOff+j*g.keyStride, g.key, depth+1); err != nil {
						return err
					}
				}
				if len(g.val) > 0 {
					if err := d.value(grp+g.valOff+j*g.valStride, g.val, depth+1); err != nil {
						return err
					}
				}
			}
		}
	}
	return d.s.freeWord(uintptr(off), 0, d.held)
}

// wordTable frees a 'W' hash table's entries' storage, then its table.
func (d *dropper) wordTable(off, slot, tomb uint64, val Shape, depth int) error {
	t, n, err := d.tableWords(off)
	if err != nil || t == 0 {
		return err
	}
	if len(val) > 0 {
		bsize, err := d.blockSize(t)
		if err != nil {
			return err
		}
		if slot < 8 || slot > 1<<20 || slot%8 != 0 || t%8 != 0 {
			return corrupt("hash table at %d: a malformed shape (%d-byte slots) or table offset %d", off, slot, t)
		}
		data := (t + 2*slot + 63) &^ 63
		if data-t > bsize || n > (bsize-(data-t))/slot {
			return corrupt("hash table at %d: %d slots of %d bytes in a block of %d at %d", off, n, slot, bsize, t)
		}
		flags := atomic.LoadUint64(d.s.h.w(uintptr(t + 8)))
		for bit, v := range [2]uint64{t + 16, t + 8 + slot} {
			if flags&(1<<bit) != 0 {
				if err := d.value(v, val, depth+1); err != nil {
					return err
				}
			}
		}
		for s := data; s < data+n*slot; s += slot {
			if k := atomic.LoadUint64(d.s.h.w(uintptr(s))); k == 0 || k == tomb {
				continue
			}
			if err := d.value(s+8, val, depth+1); err != nil {
				return err
			}
		}
	}
	return d.s.freeWord(uintptr(off), 0, d.held)
}

// hashTable frees an 'H' hash table's entries' storage (the format
// before 'G': no build writes it, an older build's lane records may
// still hold it), then its table.
func (d *dropper) hashTable(off, slot, keyOff, valOff uint64, key, val Shape, depth int) error {
	t, n, err := d.tableWords(off)
	if err != nil || t == 0 {
		return err
	}
	if len(key)+len(val) > 0 {
		bsize, err := d.blockSize(t)
		if err != nil {
			return err
		}
		if slot < 8 || slot > 1<<20 || n > bsize/slot || keyOff >= slot || valOff > slot {
			return corrupt("hash table at %d: %d slots of %d bytes in a block of %d at %d", off, n, slot, bsize, t)
		}
		for i := uint64(0); i < n; i++ {
			s := t + i*slot
			if atomic.LoadUint64(d.s.h.w(uintptr(s))) < 2 {
				continue
			}
			if len(key) > 0 {
				if err := d.value(s+keyOff, key, depth+1); err != nil {
					return err
				}
			}
			if len(val) > 0 {
				if err := d.value(s+valOff, val, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return d.s.freeWord(uintptr(off), 0, d.held)
}

// blockSize is the usable size of the live block at off.
func (d *dropper) blockSize(off uint64) (uint64, error) {
	if d.held {
		return d.s.h.blockSize(off)
	}
	if err := d.s.lockLane(); err != nil {
		return 0, err
	}
	defer d.s.lk.unlock()
	return d.s.h.blockSize(off)
}
