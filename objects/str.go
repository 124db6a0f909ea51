package objects

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/mapped"
)

// String is a string that lives in a segment: a field of a value there,
// an element of a container, a named object. Its zero value is "".
//
// Set is crash-atomic and, once the storage is large enough, takes no
// lock and no lane: a string of up to 7 bytes lives inline in the header
// word; a longer one in a block of the segment with room for two values,
// so that Set writes the new value into the half not in use and then
// publishes it (length and half) with one store. A value longer than the
// block's half moves to a new block in a mapped.Lane, freeing the old one.
// So a String takes twice its longest value's bytes in the segment; the
// block stays when a shorter value is set, and is freed when the String
// is dropped (its container's removal, Destroy).
//
// Bytes returns a view into the segment, valid until the next Set; String
// copies. Like a Go variable it is not safe for concurrent mutation.
//
// Header (24 bytes):
//
//	word 0: inline (bit 63): length in bits 56-62, the bytes in bits 0-55;
//	        otherwise the length (bits 0-47) and the half in use (bit 48)
//	word 1: offset of the block (0: none; then the value is "" unless inline)
//	word 2: bytes per half of the block
type String struct {
	w   uint64
	blk uint64
	c   uint64
}

const (
	strInline    = uint64(1) << 63
	strHalf      = uint64(1) << 48
	strLenMask   = strHalf - 1
	strInlineMax = 7
	stringName   = "String"
)

func (String) containerKind() byte         { return 'S' }
func (String) containerElem() reflect.Type { return nil }
func (String) containerShape(off uintptr, sh, _ mapped.Shape) mapped.Shape {
	return sh.Block(off + 8)
}

func (s *String) seg(method string) *mapped.Segment {
	return segFor(unsafe.Pointer(s), stringName, method)
}

// bytesIn is the value as a view, checked against seg.
func (s *String) bytesIn(seg *mapped.Segment) ([]byte, error) {
	w := s.w
	if w&strInline != 0 {
		n := (w >> 56) & 0x7f
		if n > strInlineMax {
			return nil, damaged(seg, stringName, unsafe.Pointer(s), "inline length %d", n)
		}
		return unsafe.Slice((*byte)(unsafe.Pointer(&s.w)), 8)[:n:n], nil
	}
	blk, c, n := s.blk, s.c, w&strLenMask
	if blk == 0 || n == 0 {
		return nil, nil
	}
	if n > c || c >= 1<<40 || !seg.Holds(blk, 2*c) {
		return nil, damaged(seg, stringName, unsafe.Pointer(s), "%d bytes in a block at %d of 2 x %d", n, blk, c)
	}
	half := (w / strHalf) & 1
	return unsafe.Slice((*byte)(unsafe.Add(seg.Base(), blk+half*c)), n), nil
}

func (s *String) mustBytes(method string) []byte {
	b, err := s.bytesIn(s.seg(method))
	if err != nil {
		panic(err)
	}
	return b
}

// Bytes returns the value as a view into the segment (no copy), valid
// until the next Set. Do not change it.
func (s *String) Bytes() []byte { return s.mustBytes("Bytes") }

// String returns the value (a copy, in Go memory).
func (s *String) String() string { return string(s.mustBytes("String")) }

// Len is the value's length in bytes.
func (s *String) Len() int { return len(s.mustBytes("Len")) }

// Equal reports whether the value is v, without allocating.
func (s *String) Equal(v string) bool { return string(s.mustBytes("Equal")) == v }

// Compare compares the value with v as strings.Compare does, without
// allocating.
func (s *String) Compare(v string) int {
	b := s.mustBytes("Compare")
	return strings.Compare(unsafe.String(unsafe.SliceData(b), len(b)), v)
}

// Set makes the value v, crash-atomically. A segment with no room for a
// larger block is mapped.ErrNoSpace, and the value is unchanged.
func (s *String) Set(v string) error {
	seg := mapped.SegmentAt(unsafe.Pointer(s))
	if seg == nil || !seg.CanChange() {
		return s.setSlow(v)
	}
	n := uint64(len(v))
	if n <= strInlineMax {
		var w [8]byte
		copy(w[:], v)
		journal.StoreOrdered(&s.w, *(*uint64)(unsafe.Pointer(&w))|strInline|n<<56)
		return nil
	}
	w, blk, c := s.w, s.blk, s.c
	if blk >= seg.BlockStart() && n <= c && c < 1<<40 && seg.Holds(blk, 2*c) {
		// Into the half not in use, then publish length and half with
		// one store.
		half := uint64(0)
		if w&strInline == 0 {
			half = ((w / strHalf) & 1) ^ 1
		}
		copy(unsafe.Slice((*byte)(unsafe.Add(seg.Base(), blk+half*c)), n), v)
		journal.StoreOrdered(&s.w, n|half*strHalf)
		return nil
	}
	return s.setSlow(v)
}

// setSlow is Set's other paths: the misuse panic, read-only, a damaged
// header, and a value that needs a larger block, moved in a lane.
func (s *String) setSlow(v string) error {
	seg := s.seg("Set")
	if err := writable(seg, stringName, "Set"); err != nil {
		return err
	}
	n := uint64(len(v))
	if n > strLenMask {
		return fmt.Errorf("mapstore: objects.String.Set in %s: %d bytes: %w", seg.Name(), n, mapped.ErrInvalidSize)
	}
	blk, c := s.blk, s.c
	if blk != 0 && (c >= 1<<40 || !seg.Holds(blk, 2*c)) {
		return damaged(seg, stringName, unsafe.Pointer(s), "a block at %d of 2 x %d", blk, c)
	}
	if n <= c && blk != 0 || n <= strInlineMax {
		return s.Set(v)
	}
	var l mapped.Lane
	err := l.Begin(seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	if err := l.Save(unsafe.Pointer(s), int(unsafe.Sizeof(*s))); err != nil {
		l.Abort()
		return err
	}
	nc := max(n, 2*c, 24)
	b, err := l.Allocate(int(2 * nc))
	if err != nil {
		l.Abort()
		return fmt.Errorf("mapstore: objects.String.Set: %w", err)
	}
	nc = uint64(cap(b)) / 2
	copy(b, v)
	if blk != 0 {
		if err := l.Free(unsafe.Add(seg.Base(), blk)); err != nil {
			l.Abort()
			return err
		}
	}
	s.blk = offOf(seg, unsafe.Pointer(unsafe.SliceData(b)))
	s.c = nc
	s.w = n
	return l.Commit()
}
