package objects

import (
	"fmt"
	"iter"
	"reflect"
	"unsafe"

	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/mapped"
)

// Vector is a growable array of T that lives in a segment, like a Go
// slice whose storage is a block of the segment. Its zero value is an
// empty vector: construct it in a segment (objects.Construct(seg, name,
// objects.Vector[T]{}), or as a field of a value there) and call its
// methods through the pointer you get.
//
// Every mutating call is crash-atomic: after a SIGKILL anywhere in it,
// and the recovery that follows, the vector holds what it held before
// the call or what it holds after, and no block leaks. An Append that
// fits the capacity writes the elements, then publishes the length with
// one store; a call that moves, grows or frees storage runs in a
// mapped.Lane. Growth doubles the capacity (in place when the pages after
// the storage are free); when the new capacity passes a megabyte, its
// pages are faulted in by another goroutine, ahead of the appends
// (mapped.Segment.PrefaultAhead, which follows the length), so that they
// do not each wait for one.
//
// Like a Go slice it is not safe for concurrent mutation: guard it (an
// objects.Mutex in the segment, when processes share it). At, Insert,
// Delete and the others panic on an index out of range, as a slice does.
// Elements may be containers or hold them (Vector[String], a struct with
// a Vector field...): Truncate, Delete, Clear and destroying the vector
// free what the removed elements own.
//
// Header (24 bytes): the offset of the storage block (0: none, and the
// vector is empty whatever the other words say), the length, the
// capacity in elements.
type Vector[T any] struct {
	data uint64
	n    uint64
	c    uint64
}

func (Vector[T]) containerKind() byte         { return 'V' }
func (Vector[T]) containerElem() reflect.Type { return reflect.TypeFor[T]() }
func (Vector[T]) containerShape(off uintptr, sh, elem mapped.Shape) mapped.Shape {
	return sh.Vector(off, reflect.TypeFor[T]().Size(), elem)
}

const vectorName = "Vector"

func (v *Vector[T]) seg(method string) *mapped.Segment {
	return segFor(unsafe.Pointer(v), vectorName, method)
}

// view returns the vector's storage as a slice of its capacity and its
// length, after checking them against the segment (a header that does not
// fit is ErrCorrupt).
func (v *Vector[T]) view(seg *mapped.Segment) ([]T, uint64, error) {
	var zero T
	size := uint64(unsafe.Sizeof(zero))
	data, n, c := v.data, v.n, v.c
	if size == 0 {
		return unsafe.Slice((*T)(unsafe.Pointer(v)), n)[:n:n], n, nil
	}
	if data == 0 {
		return nil, 0, nil
	}
	if n > c || c >= 1<<40 || !seg.Holds(data, c*size) || data%uint64(unsafe.Alignof(zero)) != 0 {
		return nil, 0, damaged(seg, vectorName, unsafe.Pointer(v), "storage at %d for %d of %d elements of %d bytes does not fit the segment", data, n, c, size)
	}
	return unsafe.Slice((*T)(unsafe.Add(seg.Base(), data)), c), n, nil
}

// mustView is view for the methods that cannot return an error: a
// damaged header panics with the error.
func (v *Vector[T]) mustView(method string) ([]T, uint64) {
	s, n, err := v.view(v.seg(method))
	if err != nil {
		panic(err)
	}
	return s, n
}

// Len is the number of elements.
func (v *Vector[T]) Len() int {
	_, n := v.mustView("Len")
	return int(n)
}

// Cap is the number of elements the storage holds without growing.
func (v *Vector[T]) Cap() int {
	s, _ := v.mustView("Cap")
	return len(s)
}

// At returns a pointer to element i, in place. It panics if i is out of
// range.
func (v *Vector[T]) At(i int) *T {
	s, n := v.mustView("At")
	if uint64(i) >= n {
		panic(fmt.Sprintf("mapstore: objects.Vector.At: index out of range [%d] with length %d", i, n))
	}
	return &s[i]
}

// Slice returns the elements as a Go slice over the storage in the
// segment (no copy): changes through it are changes to the vector, and
// slices.Sort works in place. It is valid until the next call that grows,
// shrinks or moves the storage (Append beyond Cap, Insert, Delete,
// Truncate, Reserve, Resize, Clear).
func (v *Vector[T]) Slice() []T {
	s, n := v.mustView("Slice")
	return s[:n:n]
}

// All iterates over the elements' indexes and pointers, in order.
func (v *Vector[T]) All() iter.Seq2[int, *T] {
	return func(yield func(int, *T) bool) {
		s := v.Slice()
		for i := range s {
			if !yield(i, &s[i]) {
				return
			}
		}
	}
}

// Append adds xs at the end, growing the storage if they do not fit. A
// segment with no room for the grown storage is mapped.ErrNoSpace, and
// the vector is unchanged.
func (v *Vector[T]) Append(xs ...T) error {
	seg := mapped.SegmentAt(unsafe.Pointer(v))
	if seg != nil && len(xs) == 1 && seg.CanChange() {
		// The common case, written out: one element that fits. Write it
		// past the length, then publish the length with one store. No
		// lane, no lock, no shared word but the vector's own.
		data, n, c := v.data, v.n, v.c
		size := uint64(unsafe.Sizeof(xs[0]))
		if n < c && c < 1<<40 && data >= seg.BlockStart() && data%uint64(unsafe.Alignof(xs[0])) == 0 && seg.Holds(data, c*size) {
			*(*T)(unsafe.Add(seg.Base(), data+n*size)) = xs[0]
			journal.StoreOrdered(&v.n, n+1)
			return nil
		}
	}
	return v.append(xs)
}

func (v *Vector[T]) append(xs []T) error {
	seg := v.seg("Append")
	if err := writable(seg, vectorName, "Append"); err != nil {
		return err
	}
	s, n, err := v.view(seg)
	if err != nil {
		return err
	}
	k := uint64(len(xs))
	if k <= uint64(len(s))-n && v.data != 0 {
		copy(s[n:], xs)
		journal.StoreOrdered(&v.n, n+k)
		return nil
	}
	if unsafe.Sizeof(*new(T)) == 0 {
		journal.StoreOrdered(&v.n, n+k)
		return nil
	}
	if v.expand(seg, max(n+k, 2*uint64(len(s)))) {
		return v.append(xs)
	}
	return v.regrow(seg, "Append", max(n+k, 2*uint64(len(s))), func(dst []T) uint64 {
		copy(dst, s[:n])
		copy(dst[n:], xs)
		return n + k
	})
}

// expand tries to grow the storage in place to c elements (the pages
// after its block are free): one crash-atomic step of the segment, then
// the capacity is published with one store (a crash between leaves a
// block larger than the capacity says, which is still the vector's).
func (v *Vector[T]) expand(seg *mapped.Segment, c uint64) bool {
	size := uint64(unsafe.Sizeof(*new(T)))
	if v.data == 0 || size == 0 || c >= 1<<40 || c*size <= 2048 {
		return false // none yet, or small: small blocks do not grow in place
	}
	usable, err := seg.Expand(unsafe.Add(seg.Base(), v.data), int(c*size))
	if err != nil || uint64(usable) < c*size {
		return false
	}
	journal.StoreOrdered(&v.c, uint64(usable)/size)
	// Appends write the new capacity in order: let another core take its
	// page faults first.
	seg.PrefaultAhead(unsafe.Add(seg.Base(), v.data), int(v.c*size), &v.n, int(size))
	return true
}

// regrow moves the vector to new storage of at least c elements, which
// fill writes (returning the new length), in a lane: the old storage is
// freed once the move stands.
func (v *Vector[T]) regrow(seg *mapped.Segment, method string, c uint64, fill func(dst []T) uint64) error {
	var zero T
	size := uint64(unsafe.Sizeof(zero))
	c = max(c, 64/max(size, 1), 1)
	if c > mapped.MaxMaxSize/max(size, 1) {
		return fmt.Errorf("mapstore: objects.Vector.%s in %s: %d elements of %d bytes: %w", method, seg.Name(), c, size, mapped.ErrInvalidSize)
	}
	var l mapped.Lane
	err := l.Begin(seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	ok := false
	defer func() {
		if !ok {
			l.Abort()
		}
	}()
	if err := l.Save(unsafe.Pointer(v), int(unsafe.Sizeof(*v))); err != nil {
		return err
	}
	b, err := l.Allocate(int(c * size))
	if err != nil {
		return fmt.Errorf("mapstore: objects.Vector.%s: %w", method, err)
	}
	dst := unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), uint64(cap(b))/size)
	n := fill(dst)
	if old := v.data; old != 0 {
		if err := l.Free(unsafe.Add(seg.Base(), old)); err != nil {
			return err
		}
	}
	v.data = offOf(seg, unsafe.Pointer(unsafe.SliceData(b)))
	v.c = uint64(len(dst))
	v.n = n
	ok = true
	if err := l.Commit(); err != nil {
		return err
	}
	seg.PrefaultAhead(unsafe.Pointer(unsafe.SliceData(dst)), int(v.c*size), &v.n, int(size))
	return nil
}

// Reserve makes the capacity at least n elements.
func (v *Vector[T]) Reserve(n int) error {
	seg := v.seg("Reserve")
	if err := writable(seg, vectorName, "Reserve"); err != nil {
		return err
	}
	s, ln, err := v.view(seg)
	if err != nil {
		return err
	}
	if n < 0 {
		panic(fmt.Sprintf("mapstore: objects.Vector.Reserve: negative capacity %d", n))
	}
	if uint64(n) <= uint64(len(s)) || unsafe.Sizeof(*new(T)) == 0 || v.expand(seg, uint64(n)) {
		return nil
	}
	return v.regrow(seg, "Reserve", uint64(n), func(dst []T) uint64 { return uint64(copy(dst, s[:ln])) })
}

// Resize makes the length n: new elements are zero, removed ones are
// dropped (what they own is freed).
func (v *Vector[T]) Resize(n int) error {
	seg := v.seg("Resize")
	if err := writable(seg, vectorName, "Resize"); err != nil {
		return err
	}
	s, ln, err := v.view(seg)
	if err != nil {
		return err
	}
	switch {
	case n < 0:
		panic(fmt.Sprintf("mapstore: objects.Vector.Resize: negative length %d", n))
	case uint64(n) <= ln:
		return v.truncate(seg, s, ln, uint64(n))
	case uint64(n) <= uint64(len(s)) && v.data != 0:
		clear(s[ln:n])
		journal.StoreOrdered(&v.n, uint64(n))
		return nil
	case unsafe.Sizeof(*new(T)) == 0:
		journal.StoreOrdered(&v.n, uint64(n))
		return nil
	case v.expand(seg, max(uint64(n), 2*uint64(len(s)))):
		return v.Resize(n)
	}
	return v.regrow(seg, "Resize", max(uint64(n), 2*uint64(len(s))), func(dst []T) uint64 {
		copy(dst, s[:ln])
		clear(dst[ln:n])
		return uint64(n)
	})
}

// Truncate drops the elements from n on (n <= Len; what they own is
// freed). It panics if n is out of range.
func (v *Vector[T]) Truncate(n int) error {
	seg := v.seg("Truncate")
	if err := writable(seg, vectorName, "Truncate"); err != nil {
		return err
	}
	s, ln, err := v.view(seg)
	if err != nil {
		return err
	}
	if n < 0 || uint64(n) > ln {
		panic(fmt.Sprintf("mapstore: objects.Vector.Truncate: length %d out of range [0:%d]", n, ln))
	}
	return v.truncate(seg, s, ln, uint64(n))
}

func (v *Vector[T]) truncate(seg *mapped.Segment, s []T, ln, n uint64) error {
	if n == ln {
		return nil
	}
	shape, size, err := shapeFor[T]()
	if err != nil {
		return err
	}
	if len(shape) == 0 {
		journal.StoreOrdered(&v.n, n)
		return nil
	}
	// The dropped elements own blocks: free them after the length stands.
	var l mapped.Lane
	err = l.Begin(seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	if err := l.Store(&v.n, n); err != nil {
		l.Abort()
		return err
	}
	if err := l.Drop(unsafe.Pointer(&s[n]), int(ln-n), int(size), shape); err != nil {
		l.Abort()
		return err
	}
	return l.Commit()
}

// Clear drops every element (what they own is freed); the capacity
// stays.
func (v *Vector[T]) Clear() error { return v.Truncate(0) }

// Insert inserts xs before element i (0 <= i <= Len), moving the
// elements from i on up. It panics if i is out of range.
func (v *Vector[T]) Insert(i int, xs ...T) error {
	seg := v.seg("Insert")
	if err := writable(seg, vectorName, "Insert"); err != nil {
		return err
	}
	s, n, err := v.view(seg)
	if err != nil {
		return err
	}
	if i < 0 || uint64(i) > n {
		panic(fmt.Sprintf("mapstore: objects.Vector.Insert: index out of range [%d] with length %d", i, n))
	}
	k := uint64(len(xs))
	if k == 0 {
		return nil
	}
	if uint64(i) == n {
		return v.Append(xs...)
	}
	size := uint64(unsafe.Sizeof(*new(T)))
	if size == 0 {
		journal.StoreOrdered(&v.n, n+k)
		return nil
	}
	in := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(xs))), k*size)
	if k <= uint64(len(s))-n && k*size <= 256 {
		// In place: move the tail up, write xs, publish the length; all
		// three after the commit, so that a crash leaves it before or
		// finishes it.
		var l mapped.Lane
		err := l.Begin(seg)
		if err != nil {
			return err
		}
		defer l.Abort() // a no-op once it committed; a panic undoes the call
		err = l.Move(unsafe.Pointer(&s[uint64(i)+k]), unsafe.Pointer(&s[i]), int((n-uint64(i))*size))
		if err == nil {
			err = l.Write(unsafe.Pointer(&s[i]), in)
		}
		if err == nil {
			err = l.Store(&v.n, n+k)
		}
		if err != nil {
			l.Abort()
			return err
		}
		return l.Commit()
	}
	// Too many bytes to write in place within a lane record, or no room
	// (and none after the storage): a copy, of the same capacity when
	// they fit.
	c := uint64(len(s))
	if k > c-n {
		if k*size <= 256 && v.expand(seg, max(n+k, 2*c)) {
			return v.Insert(i, xs...)
		}
		c = max(n+k, 2*c)
	}
	return v.regrow(seg, "Insert", c, func(dst []T) uint64 {
		copy(dst, s[:i])
		copy(dst[i:], xs)
		copy(dst[uint64(i)+k:], s[i:n])
		return n + k
	})
}

// Delete removes elements [i, j) (0 <= i <= j <= Len), moving the ones
// after them down; what the removed ones own is freed. It panics if the
// range is out of bounds.
func (v *Vector[T]) Delete(i, j int) error {
	seg := v.seg("Delete")
	if err := writable(seg, vectorName, "Delete"); err != nil {
		return err
	}
	s, n, err := v.view(seg)
	if err != nil {
		return err
	}
	if i < 0 || j < i || uint64(j) > n {
		panic(fmt.Sprintf("mapstore: objects.Vector.Delete: slice bounds out of range [%d:%d] with length %d", i, j, n))
	}
	if i == j {
		return nil
	}
	if uint64(j) == n {
		return v.truncate(seg, s, n, uint64(i))
	}
	shape, size, err := shapeFor[T]()
	if err != nil {
		return err
	}
	if size == 0 {
		journal.StoreOrdered(&v.n, n-uint64(j-i))
		return nil
	}
	// After the commit: free what the removed elements own, move the tail
	// down over them, publish the length.
	var l mapped.Lane
	err = l.Begin(seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	err = l.Drop(unsafe.Pointer(&s[i]), j-i, int(size), shape)
	if err == nil {
		err = l.Move(unsafe.Pointer(&s[i]), unsafe.Pointer(&s[j]), int((n-uint64(j))*uint64(size)))
	}
	if err == nil {
		err = l.Store(&v.n, n-uint64(j-i))
	}
	if err != nil {
		l.Abort()
		return err
	}
	return l.Commit()
}
