package region

import (
	"errors"
	"fmt"
	"os"
	"sync"
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

// Region is an open backing: a file descriptor and the operations that
// need it. A Region is safe for concurrent use, except that a mapping must
// not be used after Unmap or Close.
type Region struct {
	name     string
	f        *os.File
	created  bool
	durable  bool // whether Sync reaches stable storage (false on tmpfs shm)
	readOnly bool // the descriptor is read-only

	mu sync.Mutex
	mm mmap.MMap
}

// New wraps an open file. name is used in messages; created says the
// file was created by this open; durable says whether syncing it is
// meaningful (a file on disk) or a no-op (shared memory on tmpfs).
func New(name string, f *os.File, created, durable bool) *Region {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	readOnly := err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY
	return &Region{name: name, f: f, created: created, durable: durable, readOnly: readOnly}
}

// Name is the backing's name, as in messages.
func (r *Region) Name() string { return r.name }

// Created reports whether this open created the backing.
func (r *Region) Created() bool { return r.created }

// Durable reports whether Sync writes to stable storage.
func (r *Region) Durable() bool { return r.durable }

// Size is the current size of the backing in bytes.
func (r *Region) Size() (int64, error) {
	fi, err := r.f.Stat()
	if err != nil {
		return 0, r.wrap("stat", err)
	}
	return fi.Size(), nil
}

// ReadAt reads from the backing without mapping it.
func (r *Region) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(p, off)
	if err != nil && n < len(p) {
		return n, r.wrap("read", err)
	}
	return n, nil
}

// Resize makes the backing exactly size bytes long. Growing reserves the
// new blocks with fallocate first, so that a full filesystem or tmpfs is
// ErrNoSpace now rather than SIGBUS on a later write. If growing fails the
// backing is left at its old size.
func (r *Region) Resize(size int64) error {
	old, err := r.Size()
	if err != nil {
		return err
	}
	if size > old {
		err := fallocate(int(r.f.Fd()), old, size-old)
		if err != nil {
			_ = r.f.Truncate(old)
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) {
				return fmt.Errorf("%s: grow to %d bytes: %w (%w)", r.name, size, ErrNoSpace, err)
			}
			return r.wrap(fmt.Sprintf("grow to %d bytes", size), err)
		}
	}
	if err := r.f.Truncate(size); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) {
			return fmt.Errorf("%s: resize to %d bytes: %w (%w)", r.name, size, ErrNoSpace, err)
		}
		return r.wrap(fmt.Sprintf("resize to %d bytes", size), err)
	}
	return nil
}

func fallocate(fd int, off, n int64) error {
	for {
		err := unix.Fallocate(fd, 0, off, n)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP):
			return nil // the filesystem cannot reserve; ftruncate alone
		default:
			return err
		}
	}
}

// Map maps length bytes from the start of the backing. length may be far
// larger than the backing: the address space is reserved, and pages appear
// as the backing grows, in this process and every other one that mapped it,
// without remapping. Touching a page beyond the end of the backing raises
// SIGBUS, so callers bound every access by the backing's current size.
// A Region holds one mapping at a time.
func (r *Region) Map(length int64, mode MapMode) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mm != nil {
		return nil, fmt.Errorf("%s: map: already mapped", r.name)
	}
	if length <= 0 || int64(int(length)) != length {
		return nil, fmt.Errorf("%s: map %d bytes: %w", r.name, length, ErrNoSpace)
	}
	prot := mmap.RDWR
	switch mode {
	case MapReadOnly:
		prot = mmap.RDONLY
	case MapPrivate:
		prot = mmap.COPY
	}
	m, err := mmap.MapRegion(r.f, int(length), prot, 0, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOMEM) {
			return nil, fmt.Errorf("%s: map %d bytes of address space: %w (%w)", r.name, length, ErrNoSpace, err)
		}
		return nil, r.wrap("map", err)
	}
	r.mm = m
	return []byte(m), nil
}

// Sync makes mem (a part of the mapping) and the backing's data durable:
// msync then fdatasync. On a backing that is not durable it does nothing.
func (r *Region) Sync(mem []byte) error {
	if !r.durable {
		return nil
	}
	if len(mem) > 0 {
		if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
			return r.wrap("msync", err)
		}
	}
	if err := unix.Fdatasync(int(r.f.Fd())); err != nil {
		return r.wrap("fdatasync", err)
	}
	return nil
}

// Populate faults in every page of mem, a part of a private mapping, for
// writing: each gets its own copy now, so that later writes to the file
// by others no longer show through. One madvise(MADV_POPULATE_WRITE) call
// (Linux 5.14 and later); a page at a time where that is missing.
func (r *Region) Populate(mem []byte) error {
	err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE)
	if errors.Is(err, syscall.EINVAL) {
		for i := 0; i < len(mem); i += os.Getpagesize() {
			p := (*uint32)(unsafe.Pointer(&mem[i&^3]))
			atomic.AddUint32(p, 0)
		}
		return nil
	}
	if err != nil {
		return r.wrap("copy the pages", err)
	}
	return nil
}

// MapSide maps the first n bytes of the backing a second time, shared
// and (unless the descriptor is read-only) writable, at an address of the
// kernel's choosing: a view of those bytes that stays valid after Retire.
// UnmapSide removes it.
func (r *Region) MapSide(n int64) ([]byte, error) {
	prot := unix.PROT_READ | unix.PROT_WRITE
	if r.readOnly {
		prot = unix.PROT_READ
	}
	b, err := unix.Mmap(int(r.f.Fd()), 0, int(n), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, r.wrap("map", err)
	}
	return b, nil
}

// UnmapSide removes a mapping made by MapSide.
func (r *Region) UnmapSide(b []byte) error {
	if err := unix.Munmap(b); err != nil {
		return r.wrap("unmap", err)
	}
	return nil
}

// Retire replaces the mapping, in place, with private zero-filled memory
// that no file backs: goroutines still reading or writing through
// pointers into it touch nothing shared and never fault, and the
// backing's pages are no longer referenced from this process. The address
// range stays reserved until Unmap. Where the kernel will not commit that
// much private memory, the part beyond keep bytes is made inaccessible
// instead (every access is bounded by the segment's size, at most keep).
func (r *Region) Retire(keep int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mm == nil {
		return nil
	}
	base, n := unsafe.Pointer(unsafe.SliceData(r.mm)), uintptr(len(r.mm))
	const flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED | unix.MAP_NORESERVE
	rw := unix.PROT_READ | unix.PROT_WRITE
	_, err := unix.MmapPtr(-1, 0, base, n, rw, flags)
	if errors.Is(err, syscall.ENOMEM) && uintptr(keep) < n {
		if _, err = unix.MmapPtr(-1, 0, base, uintptr(keep), rw, flags); err == nil {
			_, err = unix.MmapPtr(-1, 0, unsafe.Add(base, keep), n-uintptr(keep), unix.PROT_NONE, flags)
		}
	}
	if err != nil {
		return r.wrap("retire the mapping", err)
	}
	return nil
}

// Unmap removes the mapping. Any slice into it must no longer be used.
func (r *Region) Unmap() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mm == nil {
		return nil
	}
	err := r.mm.Unmap()
	r.mm = nil
	if err != nil {
		return r.wrap("unmap", err)
	}
	return nil
}

// Close unmaps and closes the descriptor, releasing every OFD lock taken
// through it.
func (r *Region) Close() error {
	err := r.Unmap()
	if cerr := r.CloseFile(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// CloseFile closes the descriptor, releasing every OFD lock taken through
// it, and leaves the mapping (if any) in place.
func (r *Region) CloseFile() error {
	if err := r.f.Close(); err != nil {
		return r.wrap("close", err)
	}
	return nil
}

// Lock takes an OFD byte-range lock on the single byte at off (which may
// lie far beyond the end of the backing). exclusive asks for a write lock
// (the descriptor must be writable), otherwise a read lock. With wait it
// blocks until the lock is granted; without, it returns (false, nil) when
// another open file description holds a conflicting lock. OFD locks belong
// to the open file description: the kernel releases them when the last
// descriptor for it is closed, including when the process dies, and they
// conflict between two opens of the same file in one process.
func (r *Region) Lock(off int64, exclusive, wait bool) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: off, Len: 1}
	if exclusive {
		lk.Type = unix.F_WRLCK
	}
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	for {
		err := unix.FcntlFlock(r.f.Fd(), cmd, &lk)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !wait && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES)):
			return false, nil
		default:
			return false, r.wrap(fmt.Sprintf("lock byte %d", off), err)
		}
	}
}

// Unlock releases this open's lock on the byte at off.
func (r *Region) Unlock(off int64) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(r.f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		return r.wrap(fmt.Sprintf("unlock byte %d", off), err)
	}
	return nil
}

// Held reports whether another open file description holds a lock on the
// byte at off that conflicts with a write lock: for a liveness lock, whether
// its owner is alive.
func (r *Region) Held(off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(r.f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, r.wrap(fmt.Sprintf("test lock byte %d", off), err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

func (r *Region) wrap(op string, err error) error {
	return fmt.Errorf("%s: %s: %w", r.name, op, err)
}
