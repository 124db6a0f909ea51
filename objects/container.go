package objects

import (
	"fmt"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// What the containers share: finding the segment a container lives in
// from its own address, bounding what its header says by the segment, and
// the misuse panics.

// segFor is the open segment that holds the container at p; a container
// anywhere else (a copy in Go memory, or in a segment closed since) is a
// misuse panic that says so.
func segFor(p unsafe.Pointer, typ string, method string) *mapped.Segment {
	seg := mapped.SegmentAt(p)
	if seg == nil {
		panic(fmt.Sprintf("mapstore: objects.%s.%s at %p: this %s is not inside any open segment; a container holds offsets and only means something inside the segment that holds it (was it copied to Go memory, declared as a Go variable, or its segment closed?). Construct it in a segment (objects.Construct, New, or as a field of such a value) and call it through the pointer you get", typ, method, p, typ))
	}
	return seg
}

// writable is nil when seg may be changed (marking it in use first, if
// this open has not yet: see mapped.Segment.PrepareChange); ErrReadOnly
// when it was opened read-only, ErrClosed once it is closing.
func writable(seg *mapped.Segment, typ, method string) error {
	if seg.CanChange() {
		return nil
	}
	return seg.PrepareChange("objects." + typ + "." + method)
}

// damaged is the misuse-free panic for a header the segment holds that
// does not fit the segment: the container was overwritten. Once Close
// has begun it is ErrClosed instead: the call was overtaken by Close, and
// what it read was the zeros that replace a closed segment's memory.
func damaged(seg *mapped.Segment, typ string, p unsafe.Pointer, format string, args ...any) error {
	if seg.Closed() {
		return fmt.Errorf("mapstore: objects.%s in %s: %w (closed during the call)", typ, seg.Name(), mapped.ErrClosed)
	}
	return fmt.Errorf("mapstore: objects.%s at offset %d in %s: %s: %w", typ, uintptr(p)-uintptr(seg.Base()), seg.Name(), fmt.Sprintf(format, args...), mapped.ErrCorrupt)
}

// inSeg reports whether [off, off+n) lies inside seg (n may be 0).
func inSeg(seg *mapped.Segment, off, n uint64) bool {
	size := uint64(seg.Size())
	return off != 0 && off <= size && n <= size-off
}

// offOf is the offset of p in seg.
func offOf(seg *mapped.Segment, p unsafe.Pointer) uint64 {
	return uint64(uintptr(p) - uintptr(seg.Base()))
}

func at[T any](seg *mapped.Segment, off uint64) *T {
	return (*T)(unsafe.Add(seg.Base(), off))
}

// shapeFor is T's Shape (what a T owns), and T's size.
func shapeFor[T any]() (mapped.Shape, uintptr, error) {
	ti := infoOf[T]()
	if ti.err != nil {
		return nil, 0, ti.err
	}
	return ti.shape, ti.size, nil
}

func unsafePtr[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
