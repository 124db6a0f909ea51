package objects

import (
	"fmt"
	"iter"
	"reflect"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// List is a doubly linked list of T that lives in a segment, each
// element in a block of its own. Its zero value is an empty list. Every
// mutating call is crash-atomic (it runs in a mapped.Lane): after a
// SIGKILL and recovery the list is as before the call or as after it,
// and no element leaks. Like container/list it is not safe for
// concurrent mutation. Elements may be containers or hold them; Remove
// and destroying the list free what they own.
//
// Header (24 bytes): the first element's offset, the last one's, the
// length. An element: the next element's offset, the previous one's, a
// word that says it is linked (0 once removed), then the value. The
// header holds no address of its own, so a List may move with what holds
// it (a Vector's storage, a Map's node). InsertAfter, InsertBefore and
// Remove check their element: one removed already, or one that cannot be
// this list's (its links disagree with the list's ends), is
// mapped.ErrInvalidHandle and nothing changes. An element of another
// list in the middle of it cannot be told apart: that is a misuse, as
// with container/list.
type List[T any] struct {
	head uint64
	tail uint64
	n    uint64
}

// ListElement is an element of a List[T]: its value, and its neighbours.
type ListElement[T any] struct {
	next  uint64
	prev  uint64
	list  uint64
	value T
}

func (List[T]) containerKind() byte         { return 'L' }
func (List[T]) containerElem() reflect.Type { return reflect.TypeFor[T]() }
func (List[T]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	return sh.List(off, unsafe.Offsetof(ListElement[T]{}.value), elem)
}

const listName = "List"

// elemLinked marks an element that is in a list ("LINKED" in ASCII).
const elemLinked = 0x44454b4e494c

func (l *List[T]) seg(method string) *mapped.Segment {
	return segFor(unsafe.Pointer(l), listName, method)
}

// elem is the element at off, checked against seg (0: nil).
func elemAt[T any](seg *mapped.Segment, off uint64, from unsafe.Pointer) *ListElement[T] {
	if off == 0 {
		return nil
	}
	var e ListElement[T]
	if off%8 != 0 || !inSeg(seg, off, uint64(unsafe.Sizeof(e))) {
		panic(damaged(seg, listName, from, "a link to offset %d, outside the segment", off))
	}
	return at[ListElement[T]](seg, off)
}

// Len is the number of elements.
func (l *List[T]) Len() int {
	seg := l.seg("Len")
	if l.head == 0 {
		return 0
	}
	if n := l.n; n > uint64(seg.Size())/uint64(unsafe.Sizeof(ListElement[T]{})) {
		panic(damaged(seg, listName, unsafe.Pointer(l), "a length of %d elements", n))
	}
	return int(l.n)
}

// Front is the first element, or nil.
func (l *List[T]) Front() *ListElement[T] {
	return elemAt[T](l.seg("Front"), l.head, unsafe.Pointer(l))
}

// Back is the last element, or nil.
func (l *List[T]) Back() *ListElement[T] {
	return elemAt[T](l.seg("Back"), l.tail, unsafe.Pointer(l))
}

// Next is the element after e, or nil.
func (e *ListElement[T]) Next() *ListElement[T] {
	return elemAt[T](segFor(unsafe.Pointer(e), "ListElement", "Next"), e.next, unsafe.Pointer(e))
}

// Prev is the element before e, or nil.
func (e *ListElement[T]) Prev() *ListElement[T] {
	return elemAt[T](segFor(unsafe.Pointer(e), "ListElement", "Prev"), e.prev, unsafe.Pointer(e))
}

// Value is a pointer to the element's value, in place.
func (e *ListElement[T]) Value() *T { return &e.value }

// All iterates over pointers to the values, front to back. It stops
// after Len elements, whatever the links say.
func (l *List[T]) All() iter.Seq[*T] {
	return func(yield func(*T) bool) {
		seg := l.seg("All")
		e := elemAt[T](seg, l.head, unsafe.Pointer(l))
		limit := min(l.Len(), int(seg.Size()/int64(unsafe.Sizeof(ListElement[T]{}))))
		for k := 0; e != nil && k < limit; k++ {
			if !yield(&e.value) {
				return
			}
			e = elemAt[T](seg, e.next, unsafe.Pointer(e))
		}
	}
}

// PushBack adds v at the back and returns its element.
func (l *List[T]) PushBack(v T) (*ListElement[T], error) {
	return l.insert("PushBack", v, l.tail, 0)
}

// PushFront adds v at the front and returns its element.
func (l *List[T]) PushFront(v T) (*ListElement[T], error) {
	return l.insert("PushFront", v, 0, l.head)
}

// InsertAfter adds v after mark, an element of l.
func (l *List[T]) InsertAfter(v T, mark *ListElement[T]) (*ListElement[T], error) {
	seg := l.seg("InsertAfter")
	off, err := l.member(seg, "InsertAfter", mark)
	if err != nil {
		return nil, err
	}
	return l.insert("InsertAfter", v, off, mark.next)
}

// InsertBefore adds v before mark, an element of l.
func (l *List[T]) InsertBefore(v T, mark *ListElement[T]) (*ListElement[T], error) {
	seg := l.seg("InsertBefore")
	off, err := l.member(seg, "InsertBefore", mark)
	if err != nil {
		return nil, err
	}
	return l.insert("InsertBefore", v, mark.prev, off)
}

// member is e's offset. e must be in l's segment (a misuse panic
// otherwise) and one of l's elements (mapped.ErrInvalidHandle otherwise).
func (l *List[T]) member(seg *mapped.Segment, method string, e *ListElement[T]) (uint64, error) {
	if e == nil || mapped.SegmentAt(unsafe.Pointer(e)) != seg {
		panic(fmt.Sprintf("mapstore: objects.List.%s: the element is not in the list's segment %s", method, seg.Name()))
	}
	off := offOf(seg, unsafe.Pointer(e))
	if e.list != elemLinked || l.head == 0 || (e.prev == 0) != (l.head == off) || (e.next == 0) != (l.tail == off) {
		return 0, fmt.Errorf("mapstore: objects.List.%s in %s: the element at offset %d is not one of this list's (another list's, or removed): %w", method, seg.Name(), off, mapped.ErrInvalidHandle)
	}
	return off, nil
}

// insert links a new element holding v between the elements at prev and
// next (0: the list's end), in a lane.
func (l *List[T]) insert(method string, v T, prev, next uint64) (*ListElement[T], error) {
	seg := l.seg(method)
	if err := writable(seg, listName, method); err != nil {
		return nil, err
	}
	if l.head == 0 {
		prev, next = 0, 0 // empty (or dropped): start afresh
	}
	pe := elemAt[T](seg, prev, unsafe.Pointer(l))
	ne := elemAt[T](seg, next, unsafe.Pointer(l))
	var ln mapped.Lane
	err := ln.Begin(seg)
	if err != nil {
		return nil, err
	}
	defer ln.Abort() // a no-op once it committed; a panic undoes the call
	fail := func(err error) (*ListElement[T], error) {
		ln.Abort()
		return nil, err
	}
	if err := ln.Save(unsafe.Pointer(l), int(unsafe.Sizeof(*l))); err != nil {
		return fail(err)
	}
	if pe != nil {
		if err := ln.Save(unsafe.Pointer(&pe.next), 8); err != nil {
			return fail(err)
		}
	}
	if ne != nil {
		if err := ln.Save(unsafe.Pointer(&ne.prev), 8); err != nil {
			return fail(err)
		}
	}
	b, err := ln.Allocate(int(unsafe.Sizeof(ListElement[T]{})))
	if err != nil {
		return fail(fmt.Errorf("mapstore: objects.List.%s: %w", method, err))
	}
	e := (*ListElement[T])(unsafe.Pointer(unsafe.SliceData(b)))
	e.next, e.prev, e.list, e.value = next, prev, elemLinked, v
	off := offOf(seg, unsafe.Pointer(e))
	if pe != nil {
		pe.next = off
	} else {
		l.head = off
	}
	if ne != nil {
		ne.prev = off
	} else {
		l.tail = off
	}
	if prev == 0 && next == 0 {
		l.n = 1
	} else {
		l.n++
	}
	if err := ln.Commit(); err != nil {
		return nil, err
	}
	return e, nil
}

// Remove unlinks e, an element of l, and frees it and what its value
// owns.
func (l *List[T]) Remove(e *ListElement[T]) error {
	seg := l.seg("Remove")
	if err := writable(seg, listName, "Remove"); err != nil {
		return err
	}
	if _, err := l.member(seg, "Remove", e); err != nil {
		return err
	}
	shape, size, err := shapeFor[T]()
	if err != nil {
		return err
	}
	pe := elemAt[T](seg, e.prev, unsafe.Pointer(e))
	ne := elemAt[T](seg, e.next, unsafe.Pointer(e))
	var ln mapped.Lane
	err = ln.Begin(seg)
	if err != nil {
		return err
	}
	defer ln.Abort() // a no-op once it committed; a panic undoes the call
	err = ln.Save(unsafe.Pointer(l), int(unsafe.Sizeof(*l)))
	if err == nil && pe != nil {
		err = ln.Save(unsafe.Pointer(&pe.next), 8)
	}
	if err == nil && ne != nil {
		err = ln.Save(unsafe.Pointer(&ne.prev), 8)
	}
	if err == nil {
		err = ln.Drop(unsafe.Pointer(&e.value), 1, int(size), shape)
	}
	if err == nil {
		err = ln.Store(&e.list, 0) // a second Remove finds it removed
	}
	if err == nil {
		err = ln.Free(unsafe.Pointer(e))
	}
	if err != nil {
		ln.Abort()
		return err
	}
	if pe != nil {
		pe.next = e.next
	} else {
		l.head = e.next
	}
	if ne != nil {
		ne.prev = e.prev
	} else {
		l.tail = e.prev
	}
	l.n--
	return ln.Commit()
}
