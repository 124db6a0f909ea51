package objects

import (
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// Errors of this package; the segment's own (mapped.ErrNotFound,
// mapped.ErrExists, mapped.ErrInvalidName, mapped.ErrInvalidSize,
// mapped.ErrInvalidHandle, mapped.ErrNoSpace, ...) pass through wrapped.
var (
	// ErrNotPlainData: the type holds a Go pointer, slice, string, map,
	// interface, chan, func or unsafe.Pointer somewhere inside, so it
	// cannot live in a segment. The error names the field path.
	ErrNotPlainData = errors.New("type is not plain data")
	// ErrTypeMismatch: the name holds an object of another layout (or an
	// array where one object was asked for). The error names both types.
	ErrTypeMismatch = errors.New("type mismatch")
)

// info returns T's typeInfo, or ErrNotPlainData wrapped for op.
func info[T any](op, name string) (*typeInfo, error) {
	ti := infoOf[T]()
	if ti.err != nil {
		if name != "" {
			op += fmt.Sprintf(" %q", name)
		}
		return nil, fmt.Errorf("mapstore: %s: %w", op, ti.err)
	}
	return ti, nil
}

func (ti *typeInfo) nameSpec(count int64) mapped.NameSpec {
	return mapped.NameSpec{Count: count, ElemSize: int64(ti.size), Align: int(max(ti.align, 1)), Layout: ti.spec}
}

// check verifies that n holds T's layout; array says whether an array
// (any count) is acceptable, or only a single object.
func (ti *typeInfo) check(seg *mapped.Segment, op string, n mapped.Named, array bool) error {
	if !ti.matches(n.Layout) {
		stored, _, ok := decodeSpec(n.Layout)
		if !ok {
			stored = "an object of unknown type (not created through objects)"
		}
		if stored == ti.name {
			return fmt.Errorf("mapstore: %s %q in %s: it holds a %s of another layout (its type changed since, or an older build's format): %w", op, n.Name, seg.Name(), stored, ErrTypeMismatch)
		}
		return fmt.Errorf("mapstore: %s %q in %s: it holds %s, not %s: %w", op, n.Name, seg.Name(), stored, ti.name, ErrTypeMismatch)
	}
	if !array && n.Count != 1 {
		return arrayMismatch(seg, op, n.Name, n.Count, ti.name)
	}
	return nil
}

func ptrOf[T any](obj []byte) *T {
	if len(obj) == 0 {
		return (*T)(unsafe.Pointer(unsafe.SliceData(obj)))
	}
	return (*T)(unsafe.Pointer(&obj[0]))
}

func sliceOf[T any](n mapped.Named) []T {
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(n.Obj))), n.Count)
}

// Construct creates the object name holding v, as one crash-atomic step:
// after a crash anywhere in it the name is either findable with all of v
// or absent with its memory free. A taken name is mapped.ErrExists and
// the existing object is untouched. The pointer is valid while the name
// exists and the segment is open.
func Construct[T any](seg *mapped.Segment, name string, v T) (*T, error) {
	ti, err := info[T]("construct", name)
	if err != nil {
		return nil, err
	}
	obj, err := seg.CreateNamedAs(name, false, ti.nameSpec(1), func(obj []byte) { *ptrOf[T](obj) = v })
	if err != nil {
		return nil, err
	}
	return (*T)(obj), nil
}

// ConstructArray creates the array name of n copies of v (n >= 0), as one
// crash-atomic step. A negative n, or one whose size overflows, is
// mapped.ErrInvalidSize.
func ConstructArray[T any](seg *mapped.Segment, name string, n int, v T) ([]T, error) {
	return constructArray(seg, name, n, func(a []T) {
		if unsafe.Sizeof(v) == 0 {
			return // nothing to write, however many
		}
		for i := range a {
			a[i] = v
		}
	})
}

// ConstructArrayFunc creates the array name of n elements, element i
// being f(i), as one crash-atomic step. f runs before the segment is
// locked (it may use the segment), on a Go slice that is then copied in.
func ConstructArrayFunc[T any](seg *mapped.Segment, name string, n int, f func(i int) T) ([]T, error) {
	if n < 0 {
		return constructArray[T](seg, name, n, nil)
	}
	vals := make([]T, n)
	for i := range vals {
		vals[i] = f(i)
	}
	return constructArray(seg, name, n, func(a []T) { copy(a, vals) })
}

func constructArray[T any](seg *mapped.Segment, name string, n int, fill func([]T)) ([]T, error) {
	ti, err := info[T]("construct", name)
	if err != nil {
		return nil, err
	}
	if hi, lo := bits.Mul64(uint64(max(n, 0)), uint64(ti.size)); n < 0 || uint64(n) > mapped.MaxMaxSize || hi != 0 || lo > mapped.MaxMaxSize {
		return nil, fmt.Errorf("mapstore: construct %q in %s: %d elements of %d bytes: %w", name, seg.Name(), n, ti.size, mapped.ErrInvalidSize)
	}
	obj, err := seg.CreateNamedAs(name, false, ti.nameSpec(int64(n)), func(obj []byte) {
		if fill != nil {
			fill(unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(obj))), n))
		}
	})
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*T)(obj), n), nil
}

// FindOrConstruct finds the object name, or constructs it holding v if it
// is absent. Like Find, another type is ErrTypeMismatch.
func FindOrConstruct[T any](seg *mapped.Segment, name string, v T) (*T, error) {
	for {
		p, err := Find[T](seg, name)
		if !errors.Is(err, mapped.ErrNotFound) {
			return p, err
		}
		p, err = Construct(seg, name, v)
		if !errors.Is(err, mapped.ErrExists) {
			return p, err
		}
		// Another process constructed it meanwhile: find it.
	}
}

// Find finds the single object name. A missing name is mapped.ErrNotFound;
// an object of another layout, or an array, is ErrTypeMismatch. Find does
// not allocate.
func Find[T any](seg *mapped.Segment, name string) (*T, error) {
	// findExact written out: the hottest path of the package, one call
	// deep (findExact does not inline).
	if ti := cached(keyOf((*T)(nil))); ti != nil && ti.err == nil {
		obj, count, exact, err := seg.LookupNamedAs(name, false, ti.spec)
		switch {
		case err != nil:
			return nil, err
		case exact && count == 1:
			return (*T)(obj), nil
		case exact:
			return nil, arrayMismatch(seg, "find", name, count, ti.name)
		}
	}
	n, err := lookup[T](seg, name, false)
	if err != nil {
		return nil, err
	}
	return ptrOf[T](n.Obj), nil
}

// findExact is the fast path of the finds: one read of the directory
// that also compares the stored type with ti's byte for byte. ti is
// cached's answer for T, so that the path stays one call deep (generic
// helpers do not inline into generic callers). ok is false when ti is
// nil (not cached yet), T is not plain data or the stored type is not
// exactly T's (it may still be the same layout under another name): the
// caller then looks again, with lookup, which decides and explains.
func findExact(seg *mapped.Segment, name string, unique bool, ti *typeInfo) (obj unsafe.Pointer, count int64, ok bool, err error) {
	if ti == nil || ti.err != nil {
		return nil, 0, false, nil
	}
	return seg.LookupNamedAs(name, unique, ti.spec) // exact is false with an error
}

func arrayMismatch(seg *mapped.Segment, op, name string, count int64, typeName string) error {
	return fmt.Errorf("mapstore: %s %q in %s: it is an array of %d %s (use FindArray): %w", op, name, seg.Name(), count, typeName, ErrTypeMismatch)
}

// lookup finds name and checks that it holds T (one, or any count).
func lookup[T any](seg *mapped.Segment, name string, array bool) (mapped.Named, error) {
	ti, err := info[T]("find", name)
	if err != nil {
		return mapped.Named{}, err
	}
	n, err := seg.LookupNamed(name, false)
	if err != nil {
		return mapped.Named{}, err
	}
	return n, ti.check(seg, "find", n, array)
}

// FindArray finds the array (or single object) name as a slice.
func FindArray[T any](seg *mapped.Segment, name string) ([]T, error) {
	if obj, count, ok, err := findExact(seg, name, false, cached(keyOf((*T)(nil)))); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return unsafe.Slice((*T)(obj), count), nil
	}
	n, err := lookup[T](seg, name, true)
	if err != nil {
		return nil, err
	}
	return sliceOf[T](n), nil
}

// Destroy removes the object or array name and frees its memory, as one
// crash-atomic step, after checking that it holds a T (ErrTypeMismatch
// otherwise, and nothing changes). A missing name is mapped.ErrNotFound.
func Destroy[T any](seg *mapped.Segment, name string) error {
	return destroy[T](seg, name, false)
}

func destroy[T any](seg *mapped.Segment, name string, unique bool) error {
	ti, err := info[T]("destroy", name)
	if err != nil {
		return err
	}
	if len(ti.shape) > 0 {
		// Containers inside: their storage is freed with the object.
		return seg.RemoveNamedDropping(name, unique, func(n mapped.Named) error { return ti.check(seg, "destroy", n, true) }, ti.shape)
	}
	// Exactly T's stored type first; a same-layout type under another
	// name (or a mismatch, which check explains) takes the general path.
	if removed, err := seg.RemoveNamedAs(name, unique, ti.spec); removed || err != nil {
		return err
	}
	return seg.RemoveNamed(name, unique, func(n mapped.Named) error { return ti.check(seg, "destroy", n, true) })
}

// ConstructUnique creates the one instance of T in the segment (its name
// is T's type name, in a namespace of its own), holding v. A second one
// is mapped.ErrExists.
func ConstructUnique[T any](seg *mapped.Segment, v T) (*T, error) {
	ti, err := info[T]("construct unique", "")
	if err != nil {
		return nil, err
	}
	obj, err := seg.CreateNamedAs(ti.name, true, ti.nameSpec(1), func(obj []byte) { *ptrOf[T](obj) = v })
	if err != nil {
		return nil, err
	}
	return (*T)(obj), nil
}

// FindUnique finds the one instance of T; mapped.ErrNotFound if there is
// none.
func FindUnique[T any](seg *mapped.Segment) (*T, error) {
	if ti := infoOf[T](); ti.err == nil {
		if obj, count, ok, err := findExact(seg, ti.name, true, ti); ok && count == 1 || err != nil {
			return (*T)(obj), err
		}
	}
	ti, err := info[T]("find unique", "")
	if err != nil {
		return nil, err
	}
	n, err := seg.LookupNamed(ti.name, true)
	if err != nil {
		return nil, err
	}
	if err := ti.check(seg, "find unique", n, false); err != nil {
		return nil, err
	}
	return ptrOf[T](n.Obj), nil
}

// DestroyUnique removes the one instance of T.
func DestroyUnique[T any](seg *mapped.Segment) error {
	ti, err := info[T]("destroy unique", "")
	if err != nil {
		return err
	}
	return destroy[T](seg, ti.name, true)
}

// New allocates an anonymous, zeroed T in the segment. Keep its handle
// (HandleOf) or a Ptr to it somewhere, or it is lost to a restart; Delete
// frees it.
func New[T any](seg *mapped.Segment) (*T, error) {
	a, err := NewArray[T](seg, 1)
	if err != nil {
		return nil, err
	}
	return &a[0], nil
}

// NewArray allocates an anonymous, zeroed array of n T (n >= 0, as for
// ConstructArray). Even an empty one owns a block: DeleteArray frees it.
func NewArray[T any](seg *mapped.Segment, n int) ([]T, error) {
	ti, err := info[T]("new", "")
	if err != nil {
		return nil, err
	}
	hi, size := bits.Mul64(uint64(max(n, 0)), uint64(ti.size))
	if n < 0 || uint64(n) > mapped.MaxMaxSize || hi != 0 || size > mapped.MaxMaxSize {
		return nil, fmt.Errorf("mapstore: new in %s: %d elements of %d bytes: %w", seg.Name(), n, ti.size, mapped.ErrInvalidSize)
	}
	var b []byte
	if ti.align > 16 {
		b, err = seg.AllocateAligned(int(max(size, 1)), int(ti.align))
	} else {
		b, err = seg.Allocate(int(max(size, 1)))
	}
	if err != nil {
		return nil, err
	}
	clear(b)
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n), nil
}

// Delete frees what New or NewArray returned (p is its first element),
// and what it owns (containers inside it), as one crash-atomic step. A
// pointer outside the segment, or not at the start of a block, is
// mapped.ErrInvalidHandle and nothing changes.
func Delete[T any](seg *mapped.Segment, p *T) error {
	if p == nil {
		return fmt.Errorf("mapstore: delete in %s: nil pointer: %w", seg.Name(), mapped.ErrInvalidHandle)
	}
	return deleteN(seg, p, 1)
}

// deleteN frees the block at p, which holds n T, after what they own.
func deleteN[T any](seg *mapped.Segment, p *T, n int) error {
	b := unsafe.Slice((*byte)(unsafe.Pointer(p)), 1)
	ti := infoOf[T]()
	if ti.err != nil || len(ti.shape) == 0 {
		return seg.Deallocate(b)
	}
	if _, err := seg.Handle(b); err != nil {
		return err
	}
	if blk, err := seg.Block(mustHandle(seg, b)); err != nil || uintptr(len(blk)) < uintptr(n)*ti.size {
		if err == nil {
			err = fmt.Errorf("mapstore: delete in %s: the block holds %d bytes, not %d elements of %d: %w", seg.Name(), len(blk), n, ti.size, mapped.ErrInvalidHandle)
		}
		return err
	}
	var l mapped.Lane
	err := l.Begin(seg)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	if err := l.Drop(unsafe.Pointer(p), n, int(ti.size), ti.shape); err != nil {
		l.Abort()
		return err
	}
	if err := l.Free(unsafe.Pointer(p)); err != nil {
		l.Abort()
		return err
	}
	return l.Commit()
}

func mustHandle(seg *mapped.Segment, b []byte) mapped.Handle {
	h, _ := seg.Handle(b)
	return h
}

// DeleteArray frees what NewArray returned (any length, empty too). A
// slice that does not start a block of the segment is
// mapped.ErrInvalidHandle and nothing changes.
func DeleteArray[T any](seg *mapped.Segment, a []T) error {
	p := unsafe.SliceData(a)
	if p == nil {
		return fmt.Errorf("mapstore: delete in %s: nil slice: %w", seg.Name(), mapped.ErrInvalidHandle)
	}
	return deleteN(seg, p, len(a))
}

// HandleOf is the handle of *p, which must lie in the segment: it means
// the same in every process (At turns it back into a pointer).
func HandleOf[T any](seg *mapped.Segment, p *T) (mapped.Handle, error) {
	if p == nil {
		return 0, fmt.Errorf("mapstore: handle in %s: nil pointer: %w", seg.Name(), mapped.ErrInvalidHandle)
	}
	return seg.Handle(unsafe.Slice((*byte)(unsafe.Pointer(p)), 1))
}

// At is the T at handle h. The handle must belong to the segment, leave
// room for a T before the segment's end, and be aligned for T; otherwise
// it is mapped.ErrInvalidHandle.
func At[T any](seg *mapped.Segment, h mapped.Handle) (*T, error) {
	ti, err := info[T]("at", "")
	if err != nil {
		return nil, err
	}
	b, err := seg.At(h, int(ti.size))
	if err != nil {
		return nil, err
	}
	if h.Offset()%int64(max(ti.align, 1)) != 0 {
		return nil, fmt.Errorf("mapstore: at %s: offset %d is not aligned for %s (%d): %w", seg.Name(), h.Offset(), ti.name, ti.align, mapped.ErrInvalidHandle)
	}
	return (*T)(unsafe.Pointer(unsafe.SliceData(b))), nil
}

// Info describes a named object (see Named).
type Info struct {
	Name     string
	Unique   bool   // a unique instance (ConstructUnique); Name is its type
	Type     string // the Go type it was constructed as ("" if not through objects)
	Count    int64  // elements (1 for a single object)
	ElemSize int64  // bytes per element
	Size     int64  // bytes in all: Count * ElemSize
	Handle   mapped.Handle
}

// Named iterates over the segment's named objects: a snapshot, so the
// loop body may construct and destroy.
func Named(seg *mapped.Segment) iter.Seq[Info] {
	return func(yield func(Info) bool) {
		for n := range seg.NamedObjects() {
			typ, _, _ := decodeSpec(n.Layout)
			if !yield(Info{Name: n.Name, Unique: n.Unique, Type: typ, Count: n.Count, ElemSize: n.ElemSize, Size: n.Count * n.ElemSize, Handle: n.Handle}) {
				return
			}
		}
	}
}
