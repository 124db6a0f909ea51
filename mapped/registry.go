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
}

// SegmentAt returns the open segment of this process whose memory holds
// the address p (within its current size), or nil. It does not allocate
// and takes no lock; it is how a value stored in a segment finds the
// segment it is in.
func SegmentAt(p unsafe.Pointer) *Segment {
	l := registry.list.Load()
	if l == nil {
		return nil
	}
	a := uintptr(p)
	for _, s := range *l {
		base := uintptr(s.h.base)
		if a >= base && (a-base < uintptr(s.known.Load()) || a-base < uintptr(s.sizeNow())) {
			return s
		}
	}
	return nil
}

// Holds reports whether the n bytes at offset off lie inside the
// segment's current size (which only grows while it is open). It takes
// no lock and, unless the segment grew since this process last looked,
// reads no shared memory: the bound for values read from the segment
// that locate memory to access.
func (s *Segment) Holds(off, n uint64) bool {
	end := off + n
	if end < off {
		return false
	}
	return end <= s.known.Load() || end <= uint64(s.sizeNow())
}

// sizeNow is the segment's size, remembered in known.
func (s *Segment) sizeNow() int64 {
	size := s.env.Size()
	s.known.Store(uint64(size))
	return size
}

// Base is the address at which this process maps the segment's first
// byte. It differs between processes; offsets and handles do not.
func (s *Segment) Base() unsafe.Pointer { return s.h.base }
