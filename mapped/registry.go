package mapped

import (
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The registry of open segments in this process, by mapped address range,
// so that an offset pointer stored in a segment (objects.Ptr) can find the
// segment it lives in from its own address. Readers load an immutable
// snapshot; Open and Close replace it under a mutex.
var registry struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*Segment]
	last unsafe.Pointer // *Segment, atomic: the newest open segment, which SegmentAt tries first
}

func register(s *Segment) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	var l []*Segment
	if p := registry.list.Load(); p != nil {
		l = slices.Clone(*p)
	}
	l = append(l, s)
	registry.list.Store(&l)
	atomic.StorePointer(&registry.last, unsafe.Pointer(s))
}

func unregister(s *Segment) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	p := registry.list.Load()
	if p == nil {
		return
	}
	l := slices.DeleteFunc(slices.Clone(*p), func(x *Segment) bool { return x == s })
	registry.list.Store(&l)
	last := noSegment
	if len(l) > 0 {
		last = l[len(l)-1]
	}
	atomic.StorePointer(&registry.last, unsafe.Pointer(last))
}

// SegmentAt returns the open segment of this process whose mapping holds
// the address p (the address space it reserves, up to its maximum size;
// what lies past its current size is not memory to read), or nil. It
// does not allocate, takes no lock and inlines; it is how a value stored
// in a segment finds the segment it is in.
func SegmentAt(p unsafe.Pointer) *Segment {
	if s := (*Segment)(atomic.LoadPointer(&registry.last)); uintptr(p)-s.base < s.span {
		return s
	}
	return segmentAt(p)
}

// noSegment is registry.last when no segment is open: its span holds
// nothing.
var noSegment = &Segment{}

func init() { registry.last = unsafe.Pointer(noSegment) }

func segmentAt(p unsafe.Pointer) *Segment {
	l := registry.list.Load()
	if l == nil {
		return nil
	}
	a := uintptr(p)
	for _, s := range *l {
		if a-s.base < s.span {
			return s
		}
	}
	return nil
}

// Holds reports whether the n bytes at offset off lie inside the
// segment's current size (which only grows while it is open). It takes
// no lock and, unless the segment grew since this process last looked,
// reads no shared memory: the bound for values read from the segment
// that locate memory to access. It does not look at the start of the
// range: a value that locates a block also checks it against
// BlockStart (Holds stays small enough to inline).
func (s *Segment) Holds(off, n uint64) bool {
	end := off + n
	if end < off {
		return false
	}
	return end <= s.known.Load() || end <= uint64(s.sizeNow())
}

// BlockStart is the first offset a block may have: the end of the
// manager area. A value read from the segment that locates a block (a
// container's storage) below it is corrupt.
func (s *Segment) BlockStart() uint64 { return s.lo }

// Bound is the segment's size as this process last knew it: every range
// that ends at or below it lies inside the segment, without a call; one
// that ends past it may too, if the segment grew since (ask Holds).
func (s *Segment) Bound() uint64 { return s.known.Load() }

// sizeNow is the segment's size, remembered in known.
func (s *Segment) sizeNow() int64 {
	size := s.env.Size()
	s.known.Store(uint64(size))
	return size
}

// Base is the address at which this process maps the segment's first
// byte. It differs between processes; offsets and handles do not.
func (s *Segment) Base() unsafe.Pointer { return s.h.base }
