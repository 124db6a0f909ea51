package region

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// MapMode says how a region is mapped.
type MapMode uint8

const (
	// MapShared maps read-write; writes reach the backing and every process.
	MapShared MapMode = iota
	// MapReadOnly maps read-only and shared.
	MapReadOnly
	// MapPrivate maps copy-on-write: writes stay in this process.
	MapPrivate
)

// The region's mapping is made with mmap-go (MapRegion: a shared or a
// private mapping of the file, read-only or writable), and given back with
// x/sys's MunmapPtr: Close replaces it in place with private memory
// (Retire, MAP_FIXED) and gives part of it back at once (Trim), which
// mmap-go's Unmap, that takes a mapping back whole, cannot; its Unmap is
// never called.

// Map maps length bytes from the start of the backing. length may be far
// larger than the backing: the address space is reserved, and pages appear
// as the backing grows, in this process and every other one that mapped it,
// without remapping. Touching a page beyond the end of the backing raises
// SIGBUS, so callers bound every access by the backing's current size.
// A Region holds one mapping at a time. Without the address space for it
// (ENOMEM: a ulimit -v, a full address space), Map is ErrNoSpace.
func (r *Region) Map(length int64, mode MapMode) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base != nil {
		return nil, fmt.Errorf("%s: map: already mapped", r.name)
	}
	if length <= 0 || int64(uintptr(length)) != length {
		return nil, fmt.Errorf("%s: map %d bytes: %w", r.name, length, ErrNoSpace)
	}
	prot := mmap.RDWR // shared, writable
	switch mode {
	case MapReadOnly:
		prot = mmap.RDONLY
	case MapPrivate:
		prot = mmap.COPY // private, writable
	}
	if int64(int(length)) != length {
		return nil, fmt.Errorf("%s: map %d bytes: %w", r.name, length, ErrNoSpace)
	}
	_, done, err := r.useFd("map")
	if err != nil {
		return nil, err
	}
	defer done()
	m, err := mmap.MapRegion(r.f, int(length), prot, 0, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOMEM) {
			return nil, fmt.Errorf("%s: map %d bytes of address space: %w (%w)", r.name, length, ErrNoSpace, err)
		}
		return nil, r.wrap("map", err)
	}
	r.base, r.len = unsafe.Pointer(unsafe.SliceData(m)), uintptr(length)
	return m, nil
}

// Populate faults in every page of mem, a part of a private mapping, for
// writing: each gets its own copy now, so that later writes to the file
// by others no longer show through. One madvise(MADV_POPULATE_WRITE) call
// (Linux 5.14 and later); a page at a time where that is missing.
func (r *Region) Populate(mem []byte) error {
	err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE)
	if errors.Is(err, syscall.EINVAL) {
		for i := 0; i < len(mem); i += os.Getpagesize() {
			atomic.AddUint32((*uint32)(unsafe.Pointer(&mem[i&^3])), 0)
		}
		return nil
	}
	if err != nil {
		return r.wrap("copy the pages", err)
	}
	return nil
}

// Retire replaces the mapping, in place, with private zero-filled memory
// that no file backs: goroutines still reading or writing through
// pointers into it touch nothing shared and never fault, and the
// backing's pages are no longer referenced from this process. The address
// range stays reserved until Trim and Unmap. Where the kernel will not
// commit that much private memory, the part beyond keep bytes is made
// inaccessible instead (every access is bounded by the segment's size, at
// most keep).
func (r *Region) Retire(keep int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base == nil {
		return nil
	}
	const flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED | unix.MAP_NORESERVE
	rw := unix.PROT_READ | unix.PROT_WRITE
	_, err := unix.MmapPtr(-1, 0, r.base, r.len, rw, flags)
	if k := pageUp(keep); errors.Is(err, syscall.ENOMEM) && k < r.len {
		if _, err = unix.MmapPtr(-1, 0, r.base, k, rw, flags); err == nil {
			_, err = unix.MmapPtr(-1, 0, unsafe.Add(r.base, k), r.len-k, unix.PROT_NONE, flags)
		}
	}
	if err != nil {
		return r.wrap("retire the mapping", err)
	}
	return nil
}

// RetireBounded is Retire for a caller that knows no access can reach the
// mapping at or beyond size bytes (every access is bounded by a size
// read earlier, and the size cannot grow meanwhile): it gives back the
// address range beyond size (rounded up to a page) at once, as Trim
// does, then replaces the first size bytes with private zero-filled
// memory. Two system calls, each over its own part, instead of Retire's
// replacement of the whole range and Trim's unmap of most of it again.
func (r *Region) RetireBounded(size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base == nil {
		return nil
	}
	k := min(pageUp(size), r.len)
	if k < r.len {
		if err := unix.MunmapPtr(unsafe.Add(r.base, k), r.len-k); err != nil {
			return r.wrap("unmap", err)
		}
		r.len = k
	}
	if k > 0 {
		const flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED | unix.MAP_NORESERVE
		if _, err := unix.MmapPtr(-1, 0, r.base, k, unix.PROT_READ|unix.PROT_WRITE, flags); err != nil {
			return r.wrap("retire the mapping", err)
		}
	}
	return nil
}

// Trim gives back the address space of a retired mapping beyond its first
// keep bytes (rounded up to a page): nothing may touch it any more.
func (r *Region) Trim(keep int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := pageUp(keep)
	if r.base == nil || k >= r.len {
		return nil
	}
	if err := unix.MunmapPtr(unsafe.Add(r.base, k), r.len-k); err != nil {
		return r.wrap("unmap", err)
	}
	r.len = k
	return nil
}

func pageUp(n int64) uintptr {
	p := uintptr(os.Getpagesize())
	return (uintptr(max(n, 0)) + p - 1) &^ (p - 1)
}

// Unmap removes the mapping. Any slice into it must no longer be used.
func (r *Region) Unmap() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base == nil {
		return nil
	}
	err := unix.MunmapPtr(r.base, r.len)
	r.base, r.len = nil, 0
	if err != nil {
		return r.wrap("unmap", err)
	}
	return nil
}
