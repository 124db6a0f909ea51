package region

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is an open backing: a file descriptor and the operations that
// need it. A Region is safe for concurrent use, except that a mapping must
// not be used after Unmap or Close.
type Region struct {
	name     string
	f        *os.File
	fd       int    // f's descriptor
	created  bool   // a new file, made by Open with Create
	target   string // where Publish links it (the real path), until it has
	temp     string // its hidden temporary name, where there is one, until published
	durable  bool   // whether Sync reaches stable storage (false on tmpfs shm)
	readOnly bool   // the descriptor is read-only

	mu   sync.Mutex
	base unsafe.Pointer // the mapping (see mapping.go), or nil
	len  uintptr

	fdMu       sync.RWMutex // readers use the descriptor; CloseFile closes it
	fileClosed bool
}

// useFd returns the descriptor, held open until done is called, or an
// error wrapping os.ErrClosed once CloseFile has run: no system call gets
// a descriptor number that was closed (and perhaps reused) meanwhile.
func (r *Region) useFd(op string) (fd int, done func(), err error) {
	fd, ok := r.holdFd()
	if !ok {
		return -1, nil, r.wrap(op, os.ErrClosed)
	}
	return fd, r.fdMu.RUnlock, nil
}

// holdFd is useFd for the hot calls (locks, reads): it returns the
// descriptor with fdMu read-locked (the caller unlocks it), or false once
// CloseFile has run, without building a message or a closure.
func (r *Region) holdFd() (int, bool) {
	r.fdMu.RLock()
	if r.fileClosed {
		r.fdMu.RUnlock()
		return -1, false
	}
	return r.fd, true
}

// New wraps an open file. name is used in messages; created says the
// file was created by this open; durable says whether syncing it is
// meaningful (a file on disk) or a no-op (shared memory on tmpfs).
func New(name string, f *os.File, created, durable bool) *Region {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	return newRegion(name, f, created, durable, err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY)
}

func newRegion(name string, f *os.File, created, durable, readOnly bool) *Region {
	return &Region{name: name, f: f, fd: int(f.Fd()), created: created, durable: durable, readOnly: readOnly}
}

// Name is the backing's name, as in messages.
func (r *Region) Name() string { return r.name }

// Created reports whether this open made the backing (Open with Create):
// a new file, seen by nobody until Publish.
func (r *Region) Created() bool { return r.created }

// Durable reports whether Sync writes to stable storage.
func (r *Region) Durable() bool { return r.durable }

// Owner describes who owns the backing's file, for messages: "owned by
// uid N, mode M".
func (r *Region) Owner() string {
	fi, err := r.f.Stat()
	if err != nil {
		return "owner unknown"
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("owned by uid %d, mode %v", st.Uid, fi.Mode().Perm())
	}
	return fmt.Sprintf("mode %v", fi.Mode().Perm())
}

// Size is the current size of the backing in bytes.
func (r *Region) Size() (int64, error) {
	fi, err := r.f.Stat()
	if err != nil {
		return 0, r.wrap("stat", err)
	}
	return fi.Size(), nil
}

// ReadAt reads len(p) bytes at off from the backing without mapping
// it (pread). A read that ends short is io.ErrUnexpectedEOF (io.EOF when
// nothing was read).
func (r *Region) ReadAt(p []byte, off int64) (int, error) {
	fd, ok := r.holdFd()
	if !ok {
		return 0, r.wrap("read", os.ErrClosed)
	}
	defer r.fdMu.RUnlock()
	n := 0
	for n < len(p) {
		m, err := unix.Pread(fd, p[n:], off+int64(n))
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return n, r.wrap("read", err)
		case m == 0 && n == 0:
			return 0, r.wrap("read", io.EOF)
		case m == 0:
			return n, r.wrap("read", io.ErrUnexpectedEOF)
		}
		n += m
	}
	return n, nil
}

// WriteAt writes p to the backing at off without a mapping (pwrite): the
// bytes reach the page cache that every mapping of the backing shows.
func (r *Region) WriteAt(p []byte, off int64) error {
	fd, done, err := r.useFd("write")
	if err != nil {
		return err
	}
	defer done()
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return r.wrap("write", err)
		case n == 0:
			return r.wrap("write", io.ErrShortWrite)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
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
		if err := r.reserve(old, size); err != nil {
			_ = r.f.Truncate(old)
			if noSpace(err) {
				return fmt.Errorf("%s: grow to %d bytes: %w (%w)", r.name, size, ErrNoSpace, err)
			}
			return r.wrap(fmt.Sprintf("grow to %d bytes", size), err)
		}
	}
	if err := r.f.Truncate(size); err != nil {
		if noSpace(err) {
			return fmt.Errorf("%s: resize to %d bytes: %w (%w)", r.name, size, ErrNoSpace, unwrapPath(err))
		}
		return r.wrap(fmt.Sprintf("resize to %d bytes", size), unwrapPath(err))
	}
	return nil
}

func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT)
}

// fallocateFunc is unix.Fallocate; tests replace it.
var fallocateFunc = unix.Fallocate

// reserve gives bytes [from, to) of the file blocks of their own, so that
// no later write to the mapping can find the disk or tmpfs full (SIGBUS):
// with fallocate, or where the filesystem has none, by writing zeros.
func (r *Region) reserve(from, to int64) error {
	fd, done, err := r.useFd("grow")
	if err != nil {
		return err
	}
	defer done()
	for {
		err := fallocateFunc(fd, 0, from, to-from)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP):
			return r.writeZeros(from, to)
		default:
			return err
		}
	}
}

// writeZeros writes zeros over [from, to) of the file, a megabyte at a
// time.
func (r *Region) writeZeros(from, to int64) error {
	zeros := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; {
		n, err := r.f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off)
		if err != nil {
			return unwrapPath(err)
		}
		off += int64(n)
	}
	return nil
}

// syncs counts the calls of Sync that reached stable storage.
var syncs atomic.Uint64

// Syncs is how many times Sync has written to stable storage (a durable
// backing's msync and fdatasync) in this process: tests check with it
// what an operation syncs.
func Syncs() uint64 { return syncs.Load() }

// Sync makes mem (a part of the mapping) and the backing's data durable:
// msync then fdatasync. On a backing that is not durable it does nothing.
func (r *Region) Sync(mem []byte) error {
	if !r.durable {
		return nil
	}
	syncs.Add(1)
	if len(mem) > 0 {
		if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
			return r.wrap("msync", err)
		}
	}
	fd, done, err := r.useFd("fdatasync")
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Fdatasync(fd); err != nil {
		return r.wrap("fdatasync", err)
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

// CloseFile closes the descriptor and leaves the mapping (if any) in
// place. A new file that was never published is gone with it. The OFD
// locks taken through it are released at once unless a mapping of the
// file is left in place (a mapping holds the open file description, and
// its locks, until it is unmapped, as does a copy of the descriptor):
// the descriptor is closed under syscall.ForkLock's read lock, so that no
// child process that this one is forking holds a copy meanwhile (Go's
// forkExec holds the write lock until the child has run exec, which
// closes it).
func (r *Region) CloseFile() error {
	r.fdMu.Lock()
	defer r.fdMu.Unlock()
	if r.fileClosed {
		return nil
	}
	r.fileClosed = true
	r.abandon()
	syscall.ForkLock.RLock()
	err := r.f.Close()
	syscall.ForkLock.RUnlock()
	if err != nil {
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
	fd, ok := r.holdFd()
	if !ok {
		return false, r.wrap(fmt.Sprintf("lock byte %d", off), os.ErrClosed)
	}
	defer r.fdMu.RUnlock()
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
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
	fd, ok := r.holdFd()
	if !ok {
		return r.wrap(fmt.Sprintf("unlock byte %d", off), os.ErrClosed)
	}
	defer r.fdMu.RUnlock()
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		return r.wrap(fmt.Sprintf("unlock byte %d", off), err)
	}
	return nil
}

// Held reports whether another open file description holds a lock on the
// byte at off that conflicts with a write lock: for a liveness lock, whether
// its owner is alive.
func (r *Region) Held(off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	fd, ok := r.holdFd()
	if !ok {
		return false, r.wrap(fmt.Sprintf("test lock byte %d", off), os.ErrClosed)
	}
	defer r.fdMu.RUnlock()
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false, r.wrap(fmt.Sprintf("test lock byte %d", off), err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

func (r *Region) wrap(op string, err error) error {
	return fmt.Errorf("%s: %s: %w", r.name, op, err)
}
