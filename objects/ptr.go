package objects

import (
	"fmt"
	"reflect"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// Ptr is a pointer that lives in a segment: it holds the offset of its
// target from the start of the segment, never an address, so it means
// the same in every process, whatever address each maps the segment at,
// and stays valid when copied to another place in the same segment. The
// zero Ptr is nil.
//
// Get and Set find the segment from the Ptr's own address. Called on a
// Ptr that is not inside an open segment (a copy in Go memory, or in a
// segment since closed) they panic with a message that says so: they
// never read the wrong memory. Set also panics if the target is not in
// the same segment. Both are misuse panics; IsNil works anywhere.
type Ptr[T any] struct {
	off uint64
}

func (Ptr[T]) ptrElem() reflect.Type { return reflect.TypeFor[T]() }

// IsNil reports whether p points nowhere.
func (p *Ptr[T]) IsNil() bool { return p.off == 0 }

// Offset is the target's offset in the segment (0 for nil).
func (p *Ptr[T]) Offset() int64 { return int64(p.off) }

// Get returns the target, or nil.
func (p *Ptr[T]) Get() *T {
	seg := p.segment("Get")
	if p.off == 0 {
		return nil
	}
	size := uint64(seg.Size())
	if size == 0 {
		p.notOpen("Get") // closed since segment found it
	}
	var zero T
	if p.off > size || uint64(unsafe.Sizeof(zero)) > size-p.off {
		panic(fmt.Sprintf("mapstore: objects.Ptr[%s].Get at %p: offset %d is beyond the end of segment %s (%d bytes): the Ptr is damaged", typeName(reflect.TypeFor[T]()), p, p.off, seg.Name(), seg.Size()))
	}
	return (*T)(unsafe.Add(seg.Base(), p.off))
}

// Set makes p point to v, which must be nil or in the same segment as p.
func (p *Ptr[T]) Set(v *T) {
	seg := p.segment("Set")
	if v == nil {
		p.off = 0
		return
	}
	if mapped.SegmentAt(unsafe.Pointer(v)) != seg {
		panic(fmt.Sprintf("mapstore: objects.Ptr[%s].Set at %p: target %p is not in segment %s, which holds the Ptr", typeName(reflect.TypeFor[T]()), p, v, seg.Name()))
	}
	p.off = uint64(uintptr(unsafe.Pointer(v)) - uintptr(seg.Base()))
}

func (p *Ptr[T]) segment(method string) *mapped.Segment {
	seg := mapped.SegmentAt(unsafe.Pointer(p))
	if seg == nil {
		p.notOpen(method)
	}
	return seg
}

func (p *Ptr[T]) notOpen(method string) {
	panic(fmt.Sprintf("mapstore: objects.Ptr[%s].%s at %p: this Ptr is not inside any open segment; a Ptr holds an offset and only means something inside the segment that holds it (was it copied to Go memory, or its segment closed?)", typeName(reflect.TypeFor[T]()), method, p))
}

// NewInto allocates a zeroed T in the segment that holds p and makes p
// point to it, as one crash-atomic step: after a crash either both
// happened or neither, so a linked structure built by a process that
// dies leaks nothing. p must be inside an open segment (a misuse panic
// otherwise); one opened read-only is mapped.ErrReadOnly.
func NewInto[T any](p *Ptr[T]) (*T, error) {
	seg := p.segment("NewInto")
	ti, err := info[T]("new", "")
	if err != nil {
		return nil, err
	}
	if err := writable(seg, "Ptr", "NewInto"); err != nil {
		return nil, err
	}
	var l mapped.Lane
	err = l.Begin(seg)
	if err != nil {
		return nil, err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	if err := l.Save(unsafe.Pointer(&p.off), 8); err != nil {
		l.Abort()
		return nil, err
	}
	b, err := l.Allocate(int(max(ti.size, 1)))
	if err != nil {
		l.Abort()
		return nil, err
	}
	clear(b)
	v := (*T)(unsafe.Pointer(unsafe.SliceData(b)))
	p.off = uint64(uintptr(unsafe.Pointer(v)) - uintptr(seg.Base()))
	if err := l.Commit(); err != nil {
		return nil, err
	}
	return v, nil
}
