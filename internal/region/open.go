package region

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// OpenFunc opens a path the way os.OpenFile does, through whatever
// filesystem the backing uses, and hands out the operating-system file.
type OpenFunc func(path string, flag int, perm fs.FileMode) (*os.File, error)

// Spec says where a backing lives and how it is opened.
type Spec struct {
	Name     string   // for messages: the path, or "shm:NAME"
	Path     string   // the path, as open takes it
	Open     OpenFunc // opens paths of the backing's filesystem
	Durable  bool     // Sync reaches stable storage (a file on disk)
	NoFollow bool     // refuse a symbolic link at Path (shared memory does, as shm_open does)
}

// Open opens the backing as flags say.
//
// Without Create it opens the regular file at spec.Path, never blocking
// (a FIFO or a device there is ErrNotRegular, not a wait) and never
// following a symbolic link when spec.NoFollow is set.
//
// With Create it makes a new file that no other process can see yet: an
// unnamed file in spec.Path's directory (O_TMPFILE), or where the
// filesystem has none, a hidden temporary name. The caller builds the
// segment in it and then calls Publish, which links it at spec.Path only
// if nothing is there (ErrExists otherwise). So no process ever sees a
// half-made segment at the path, and a creation that fails or dies leaves
// nothing behind (at most a hidden temporary file, where there is no
// O_TMPFILE).
func Open(spec Spec, flags Flags, perm fs.FileMode) (*Region, error) {
	if flags&Create != 0 {
		return create(spec, perm)
	}
	oflag := os.O_RDWR
	if flags&ReadOnly != 0 {
		oflag = os.O_RDONLY
	}
	if spec.NoFollow {
		oflag |= syscall.O_NOFOLLOW
	}
	f, err := spec.Open(spec.Path, oflag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(spec, err)
	}
	if err := checkRegular(spec.Name, f); err != nil {
		_ = f.Close()
		return nil, err
	}
	// A regular file ignores O_NONBLOCK; clear it all the same (none of
	// the other flags F_SETFL sets was asked for).
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETFL, 0)
	return newRegion(spec.Name, f, false, spec.Durable, flags&ReadOnly != 0), nil
}

// create makes the unpublished file of a new backing.
func create(spec Spec, perm fs.FileMode) (*Region, error) {
	dir, base := filepath.Split(spec.Path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return nil, fmt.Errorf("%s: %w: names a directory", spec.Name, ErrInvalidName)
	}
	const oflag = os.O_RDWR | syscall.O_CLOEXEC
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		f, err := spec.Open(dir, oflag|unix.O_TMPFILE, perm)
		if err == nil {
			// The descriptor's name is the directory's real path.
			r := New(spec.Name, f, true, spec.Durable)
			r.target = filepath.Join(f.Name(), base)
			return r, nil
		}
		if !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.EISDIR) && !errors.Is(err, syscall.EINVAL) {
			return nil, openError(spec, err)
		}
	}
	// No unnamed files here: a hidden temporary name, linked into place.
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+base+".mapstore-new-"+hex.EncodeToString(rnd[:]))
	f, err := spec.Open(tmp, oflag|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return nil, openError(spec, err)
	}
	r := New(spec.Name, f, true, spec.Durable)
	r.temp = f.Name()
	r.target = filepath.Join(filepath.Dir(f.Name()), base)
	return r, nil
}

// Publish links a file made by Open with Create at its path, if nothing
// is there: ErrExists otherwise (another process created the backing
// first, or something else is at the path). A durable backing's file and
// directory entry are synced, so that a crash never leaves a name that
// leads to an empty file.
func (r *Region) Publish() error {
	if !r.created || r.target == "" {
		return fmt.Errorf("%s: publish: not a new backing", r.name)
	}
	fd, done, err := r.useFd("publish")
	if err != nil {
		return err
	}
	defer done()
	if r.durable {
		if err := unix.Fsync(fd); err != nil {
			return r.wrap("sync", err)
		}
	}
	if r.temp != "" {
		err = os.Link(r.temp, r.target)
		_ = os.Remove(r.temp)
		r.temp = ""
	} else {
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, r.target, unix.AT_SYMLINK_FOLLOW)
	}
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w", r.name, ErrExists)
	case err != nil:
		return r.wrap("link into place", unwrapPath(err))
	}
	r.target = ""
	if r.durable {
		if d, err := os.Open(filepath.Dir(r.f.Name())); err == nil {
			_ = d.Sync()
			_ = d.Close()
		}
	}
	return nil
}

// abandon removes the hidden temporary file of a creation that was not
// published.
func (r *Region) abandon() {
	if r.temp != "" {
		_ = os.Remove(r.temp)
		r.temp = ""
	}
}

// openError wraps an error from opening spec's path with the package's
// sentinels: a missing file is ErrNotFound, an existing one ErrExists, a
// directory or a symbolic link that is not followed ErrNotRegular. The
// original error stays reachable through errors.Is, once, without its
// repetition of the path.
func openError(spec Spec, err error) error {
	err = unwrapPath(err)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w (%w)", spec.Name, ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w (%w)", spec.Name, ErrExists, err)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%s: %w: is a directory (%w)", spec.Name, ErrNotRegular, err)
	case spec.NoFollow && errors.Is(err, syscall.ELOOP):
		return fmt.Errorf("%s: %w: is a symbolic link, which shared memory names never follow", spec.Name, ErrNotRegular)
	}
	return fmt.Errorf("%s: %w", spec.Name, err)
}

// OpenError is openError for a backing's other calls (Remove).
func OpenError(name string, err error) error { return openError(Spec{Name: name}, err) }

// unwrapPath drops a *fs.PathError or *os.LinkError around err: its
// operation and path would repeat what the caller's message says.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// checkRegular returns ErrNotRegular unless f is a regular file.
func checkRegular(name string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: stat: %w", name, err)
	}
	m := fi.Mode()
	switch {
	case m.IsRegular():
		return nil
	case m.IsDir():
		return fmt.Errorf("%s: %w: is a directory", name, ErrNotRegular)
	case m&fs.ModeNamedPipe != 0:
		return fmt.Errorf("%s: %w: is a named pipe (FIFO)", name, ErrNotRegular)
	case m&fs.ModeSocket != 0:
		return fmt.Errorf("%s: %w: is a socket", name, ErrNotRegular)
	case m&fs.ModeDevice != 0:
		return fmt.Errorf("%s: %w: is a device", name, ErrNotRegular)
	}
	return fmt.Errorf("%s: %w: not a regular file (%v)", name, ErrNotRegular, m.Type())
}
