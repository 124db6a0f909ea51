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
