package objects

import (
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// How a Map changes, crash-atomically (but for a new key whose leaf has
// room, Map.insertInPlace, and one whose full leaf splits into a parent
// with room, Map.splitLeaf: both change the nodes in place, saved in the
// lane first): every node a call changes is written anew, as a block the
// call's lane allocates (a rollback frees it), from lists of the keys, values and children it is to hold; the
// topmost new node is published with one pointer (the root word, or a
// child word of the first node that keeps its shape), saved in the lane
// first; the old nodes, and what removed keys and values own, are freed
// by the lane's redo entries once the call commits. Key slots are copied
// bit for bit from old nodes to new ones: a string key's block belongs to
// whichever node holds its slot, and an old node is freed without its
// keys.

const maxFan = 2*64 + 2 // keys (or children) a rebuild lists at most

// seq is the keys, values (leaves) or children (internal nodes) a new
// node, or a pair of them, is built from. Keys and values are given by
// reference: a segment offset, or for a key 0 or 1 (builder.buf[0] or
// [1]: a new key's slot, a separator's copy) and for a value 0 (the new
// value). References, not pointers, so that nothing escapes to the Go
// heap.
type seq struct {
	keys [maxFan]uint64
	vals [maxFan]uint64
	kids [maxFan + 1]uint64 // an internal node's children
	nk   int
}

const (
	refNewVal = 0 // seq.vals: the value being inserted
	refBuf0   = 0 // seq.keys: builder.buf[0]
	refBuf1   = 1 // seq.keys: builder.buf[1]
)

type builder[K comparable, V any] struct {
	o      *mapOp[K, V]
	l      *mapped.Lane
	newVal unsafe.Pointer // the value being inserted (refNewVal)
	buf    [2][128]byte   // a new key's slot, a separator's copy
}

func (b *builder[K, V]) keyPtr(ref uint64) unsafe.Pointer {
	if ref <= refBuf1 {
		return unsafe.Pointer(&b.buf[ref])
	}
	return b.o.at(ref)
}

func (b *builder[K, V]) valPtr(ref uint64) unsafe.Pointer {
	if ref == refNewVal {
		return b.newVal
	}
	return b.o.at(ref)
}

// newNode allocates a node in the lane.
func (b *builder[K, V]) newNode(leaf bool) (uint64, error) {
	size := b.o.g.inSize
	if leaf {
		size = b.o.g.leafSize
	}
	blk, err := b.l.Allocate(int(size))
	if err != nil {
		return 0, err
	}
	p := unsafe.Pointer(unsafe.SliceData(blk))
	*(*[2]uint64)(p) = [2]uint64{}
	return offOf(b.o.seg, p), nil
}

// write builds a node holding s's entries [from, to) (and for an
// internal node children [from, to]).
func (b *builder[K, V]) write(s *seq, leaf bool, from, to int) (uint64, error) {
	o := b.o
	nd, err := b.newNode(leaf)
	if err != nil {
		return 0, err
	}
	// Runs of entries that lie side by side in one old node are copied
	// whole.
	b.copyRuns(s.keys[from:to], o.key(nd, 0), o.g.ks, false)
	if leaf {
		b.copyRuns(s.vals[from:to], o.val(nd, 0), o.g.vs, true)
	}
	if !leaf {
		for i := from; i <= to; i++ {
			*o.child(nd, i-from) = s.kids[i]
		}
	}
	h := uint64(to - from)
	if leaf {
		h |= nodeLeaf
	}
	*(*uint64)(o.at(nd)) = h
	return nd, nil
}

// copyRuns copies the entries refs name, size bytes each, to dst one
// after another: a run of references to consecutive segment memory in
// one copy.
func (b *builder[K, V]) copyRuns(refs []uint64, dst unsafe.Pointer, size uintptr, vals bool) {
	if size == 0 {
		return
	}
	special := uint64(refBuf1)
	if vals {
		special = refNewVal
	}
	for i := 0; i < len(refs); {
		j := i + 1
		if refs[i] > special {
			for j < len(refs) && refs[j] == refs[j-1]+uint64(size) {
				j++
			}
		}
		n := uintptr(j-i) * size
		d := unsafe.Slice((*byte)(unsafe.Add(dst, uintptr(i)*size)), n)
		var src unsafe.Pointer
		if vals {
			src = b.valPtr(refs[i])
		} else {
			src = b.keyPtr(refs[i])
		}
		if src != nil {
			copy(d, unsafe.Slice((*byte)(src), n))
		} else {
			clear(d) // a zero value
		}
		i = j
	}
}

// listNode lists node nd's n entries into s from index at.
func (b *builder[K, V]) listNode(s *seq, nd uint64, n int, leaf bool, at int) {
	o := b.o
	for i := range n {
		s.keys[at+i] = nd + nodeHdr + uint64(i)*uint64(o.g.ks)
		if leaf {
			s.vals[at+i] = nd + uint64(o.g.valOff) + uint64(i)*uint64(o.g.vs)
		}
	}
	if !leaf {
		for i := 0; i <= n; i++ {
			s.kids[at+i] = *o.child(nd, i)
		}
	}
}

// makeSlot writes k's slot into buf: a fixed-size key's bytes, or a
// string's (inline, or in a new block of the lane).
func (b *builder[K, V]) makeSlot(buf *[128]byte, k *K) (unsafe.Pointer, error) {
	o := b.o
	clear(buf[:o.g.ks])
	p := unsafe.Pointer(buf)
	if !o.g.str {
		copy(buf[:], unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
		return p, nil
	}
	s := *(*string)(unsafe.Pointer(k))
	w := (*[3]uint64)(p)
	if len(s) <= keyInlineMax {
		w[0] = uint64(len(s)) | keyInline
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&w[1])), 16), s)
		return p, nil
	}
	blk, err := b.l.Allocate(len(s))
	if err != nil {
		return nil, err
	}
	copy(blk, s)
	w[0], w[1] = uint64(len(s)), offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	return p, nil
}

// copySlot writes into buf a separator copy of the slot at src: a string
// key's bytes get a block of their own.
func (b *builder[K, V]) copySlot(buf *[128]byte, src unsafe.Pointer) error {
	o := b.o
	copy(buf[:o.g.ks], unsafe.Slice((*byte)(src), o.g.ks))
	w := (*[3]uint64)(unsafe.Pointer(buf))
	if !o.g.str || w[0]&keyInline != 0 {
		return nil
	}
	bs, err := o.slotBytes(src)
	if err != nil {
		return err
	}
	blk, err := b.l.Allocate(max(len(bs), 1))
	if err != nil {
		return err
	}
	copy(blk, bs)
	w[1] = offOf(o.seg, unsafe.Pointer(unsafe.SliceData(blk)))
	return nil
}

// publish makes nd the node at level lvl of path: the root, or the child
// its parent (unchanged but for this word) points to.
func (b *builder[K, V]) publish(path []pathEnt, lvl int, nd uint64) error {
	if lvl == 0 {
		b.o.m.root = nd // the header is saved
		return nil
	}
	p := path[lvl-1]
	w := b.o.child(p.nd, p.idx)
	if err := b.l.Save(unsafe.Pointer(w), 8); err != nil {
		return err
	}
	*w = nd
	return nil
}

// insert puts k (value *v, or zero) in the map, or with found replaces
// its value; it returns a pointer to the value in its new leaf.
func (b *builder[K, V]) insert(path []pathEnt, k *K, v *V, found bool, shape mapped.Shape) (*V, error) {
	o, l, m := b.o, b.l, b.o.m
	if err := l.Save(unsafe.Pointer(m), int(unsafe.Sizeof(*m))); err != nil {
		return nil, err
	}
	if v == nil {
		b.newVal = nil // a zero value: written as zeros
	} else {
		b.newVal = unsafe.Pointer(v)
	}
	if len(path) == 0 {
		if _, err := b.makeSlot(&b.buf[0], k); err != nil {
			return nil, err
		}
		var s seq
		s.keys[0], s.vals[0], s.nk = refBuf0, refNewVal, 1
		nd, err := b.write(&s, true, 0, 1)
		if err != nil {
			return nil, err
		}
		m.root, m.n = nd, 1
		return (*V)(o.val(nd, 0)), nil
	}
	lvl := len(path) - 1
	leaf := path[lvl]
	var s seq
	b.listNode(&s, leaf.nd, leaf.n, true, 0)
	s.nk = leaf.n
	pos := leaf.idx
	if found {
		// A value that owns blocks, replaced: the old one's are freed
		// after the commit, with the old leaf.
		if err := l.Drop(o.val(leaf.nd, pos), 1, int(o.g.vs), shape); err != nil {
			return nil, err
		}
		s.vals[pos] = refNewVal
	} else {
		if _, err := b.makeSlot(&b.buf[0], k); err != nil {
			return nil, err
		}
		copy(s.keys[pos+1:s.nk+1], s.keys[pos:s.nk])
		copy(s.vals[pos+1:s.nk+1], s.vals[pos:s.nk])
		s.keys[pos], s.vals[pos] = refBuf0, refNewVal
		s.nk++
	}
	if err := l.Free(o.at(leaf.nd)); err != nil {
		return nil, err
	}
	var res *V
	left, right := uint64(0), uint64(0)
	var sep uint64 // a reference (refBuf0 or refBuf1)
	var err error
	if s.nk <= o.g.leafCap {
		if left, err = b.write(&s, true, 0, s.nk); err != nil {
			return nil, err
		}
		res = (*V)(o.val(left, pos))
	} else {
		h := s.nk / 2
		if left, err = b.write(&s, true, 0, h); err != nil {
			return nil, err
		}
		if right, err = b.write(&s, true, h, s.nk); err != nil {
			return nil, err
		}
		if err = b.copySlot(&b.buf[1], o.key(right, 0)); err != nil {
			return nil, err
		}
		sep = refBuf1
		if pos < h {
			res = (*V)(o.val(left, pos))
		} else {
			res = (*V)(o.val(right, pos-h))
		}
	}
	if !found {
		m.n++
	}
	// Up the path while nodes split.
	for right != 0 {
		if lvl == 0 {
			var r seq
			r.keys[0], r.kids[0], r.kids[1], r.nk = sep, left, right, 1
			nd, err := b.write(&r, false, 0, 1)
			if err != nil {
				return nil, err
			}
			m.root = nd
			return res, nil
		}
		lvl--
		p := path[lvl]
		var ps seq
		b.listNode(&ps, p.nd, p.n, false, 0)
		ps.nk = p.n
		i := p.idx
		copy(ps.keys[i+1:ps.nk+1], ps.keys[i:ps.nk])
		copy(ps.kids[i+2:ps.nk+2], ps.kids[i+1:ps.nk+1])
		ps.keys[i], ps.kids[i], ps.kids[i+1] = sep, left, right
		ps.nk++
		if err := l.Free(o.at(p.nd)); err != nil {
			return nil, err
		}
		if ps.nk <= o.g.innerCap {
			if left, err = b.write(&ps, false, 0, ps.nk); err != nil {
				return nil, err
			}
			right = 0
			break
		}
		mid := ps.nk / 2
		// The middle key moves up: its slot's bytes go with it, copied
		// into the buffer not in use (sep may be the other one).
		up := uint64(refBuf0)
		if sep == refBuf0 {
			up = refBuf1
		}
		copy(b.buf[up][:o.g.ks], unsafe.Slice((*byte)(b.keyPtr(ps.keys[mid])), o.g.ks))
		if left, err = b.write(&ps, false, 0, mid); err != nil {
			return nil, err
		}
		if right, err = b.write(&ps, false, mid+1, ps.nk); err != nil {
			return nil, err
		}
		sep = up
	}
	return res, b.publish(path, lvl, left)
}

// remove deletes the key at the end of path (the leaf's idx), merging or
// evening out nodes that fall below half full.
func (b *builder[K, V]) remove(path []pathEnt, shape mapped.Shape) error {
	o, l, m := b.o, b.l, b.o.m
	if err := l.Save(unsafe.Pointer(m), int(unsafe.Sizeof(*m))); err != nil {
		return err
	}
	lvl := len(path) - 1
	leaf := path[lvl]
	pos := leaf.idx
	if len(o.g.keyShape) > 0 {
		if err := l.Drop(o.key(leaf.nd, pos), 1, int(o.g.ks), o.g.keyShape); err != nil {
			return err
		}
	}
	if err := l.Drop(o.val(leaf.nd, pos), 1, int(o.g.vs), shape); err != nil {
		return err
	}
	m.n--
	var s seq
	b.listNode(&s, leaf.nd, leaf.n, true, 0)
	s.nk = leaf.n
	copy(s.keys[pos:], s.keys[pos+1:s.nk])
	copy(s.vals[pos:], s.vals[pos+1:s.nk])
	s.nk--
	if err := l.Free(o.at(leaf.nd)); err != nil {
		return err
	}
	isLeaf := true
	for {
		capn := o.g.innerCap
		if isLeaf {
			capn = o.g.leafCap
		}
		if lvl == 0 {
			// The root: a leaf may be empty (the map is), an internal root
			// with no key gives way to its only child.
			switch {
			case isLeaf && s.nk == 0:
				m.root, m.n = 0, 0
				return nil
			case !isLeaf && s.nk == 0:
				m.root = s.kids[0]
				return nil
			}
			nd, err := b.write(&s, isLeaf, 0, s.nk)
			if err != nil {
				return err
			}
			m.root = nd
			return nil
		}
		if s.nk >= capn/2 {
			nd, err := b.write(&s, isLeaf, 0, s.nk)
			if err != nil {
				return err
			}
			return b.publish(path, lvl, nd)
		}
		// Below half: take in a sibling, or even out with it.
		p := path[lvl-1]
		si := p.idx - 1
		if p.idx == 0 {
			si = 1
		}
		li := min(si, p.idx) // the left child of the pair; key li separates them
		sib := *o.child(p.nd, si)
		sn, sleaf, err := o.node(sib)
		if err != nil {
			return err
		}
		if sleaf != isLeaf {
			return o.corrupt("siblings at offsets %d and %d are not both leaves or both inner nodes", sib, p.nd)
		}
		var c seq // the pair's entries, in order
		if si < p.idx {
			b.listNode(&c, sib, sn, isLeaf, 0)
			c.nk = sn
			if !isLeaf {
				c.keys[c.nk] = p.nd + nodeHdr + uint64(li)*uint64(o.g.ks) // the separator comes down
				c.nk++
			}
			copy(c.keys[c.nk:], s.keys[:s.nk])
			if isLeaf {
				copy(c.vals[c.nk:], s.vals[:s.nk])
			} else {
				copy(c.kids[c.nk:], s.kids[:s.nk+1])
			}
			c.nk += s.nk
		} else {
			c = s
			if !isLeaf {
				c.keys[c.nk] = p.nd + nodeHdr + uint64(li)*uint64(o.g.ks)
				c.nk++
			}
			b.listNode(&c, sib, sn, isLeaf, c.nk)
			c.nk += sn
		}
		if err := l.Free(o.at(sib)); err != nil {
			return err
		}
		if isLeaf && len(o.g.keyShape) > 0 {
			// The leaves' separator leaves the parent, merged or replaced.
			if err := l.Drop(o.key(p.nd, li), 1, int(o.g.ks), o.g.keyShape); err != nil {
				return err
			}
		}
		var ps seq
		b.listNode(&ps, p.nd, p.n, false, 0)
		ps.nk = p.n
		if c.nk <= capn {
			nd, err := b.write(&c, isLeaf, 0, c.nk)
			if err != nil {
				return err
			}
			// The parent loses key li and child li+1.
			copy(ps.keys[li:], ps.keys[li+1:ps.nk])
			copy(ps.kids[li+1:], ps.kids[li+2:ps.nk+1])
			ps.kids[li] = nd
			ps.nk--
		} else {
			h := c.nk / 2
			ln, err := b.write(&c, isLeaf, 0, h)
			if err != nil {
				return err
			}
			var rn uint64
			if isLeaf {
				if rn, err = b.write(&c, true, h, c.nk); err != nil {
					return err
				}
				if err = b.copySlot(&b.buf[1], o.key(rn, 0)); err != nil {
					return err
				}
			} else {
				copy(b.buf[1][:o.g.ks], unsafe.Slice((*byte)(b.keyPtr(c.keys[h])), o.g.ks))
				if rn, err = b.write(&c, false, h+1, c.nk); err != nil {
					return err
				}
			}
			ps.keys[li], ps.kids[li], ps.kids[li+1] = refBuf1, ln, rn
		}
		if err := l.Free(o.at(p.nd)); err != nil {
			return err
		}
		s, isLeaf = ps, false
		lvl--
	}
}
