// Package file is the regular-file backing of mapstore: a segment that
// lives in a file, durable across reboots once flushed.
//
//	seg, err := mapped.Open(file.Path("state.seg"), mapped.OpenOrCreate, mapped.WithSize(1<<20))
//
// Paths are handled through an afero filesystem, the OS filesystem unless
// [WithFs] says otherwise. The file is mapped through its operating-system
// descriptor, so the filesystem must hand out *os.File values (afero's
// OsFs, and BasePathFs or ReadOnlyFs over it, do); one that cannot, such as
// an in-memory filesystem, is refused with [backing.ErrNoDescriptor].
package file

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/afero"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/region"
)

// Option configures a file backing.
type Option func(*File)

// WithFs makes the backing reach its path through fsys instead of the OS
// filesystem.
func WithFs(fsys afero.Fs) Option {
	return func(f *File) { f.fs = fsys }
}

// File is a segment backing stored in a regular file.
type File struct {
	path string
	fs   afero.Fs
}

var _ backing.Backing = (*File)(nil)

// Path returns the backing for the file at path.
func Path(path string, opts ...Option) *File {
	f := &File{path: path, fs: afero.NewOsFs()}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Name is the file's path.
func (f *File) Name() string { return f.path }

// Open opens the file as flags say (see region.Open; mapped.Open calls
// it).
func (f *File) Open(flags region.Flags, perm fs.FileMode) (*region.Region, error) {
	if f.path == "" {
		return nil, fmt.Errorf("file backing: empty path: %w", region.ErrInvalidName)
	}
	return region.Open(region.Spec{Name: f.path, Path: f.path, Open: f.openOS, Durable: true}, flags, perm)
}

// openOS opens path through the filesystem and hands out its *os.File,
// or ErrNoDescriptor when the filesystem has none.
func (f *File) openOS(path string, flag int, perm fs.FileMode) (*os.File, error) {
	af, err := f.fs.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	osf, ok := osFile(af)
	if !ok {
		_ = af.Close()
		if flag&os.O_CREATE != 0 {
			_ = f.fs.Remove(path)
		}
		return nil, fmt.Errorf("%w (filesystem %T, file %T)", region.ErrNoDescriptor, f.fs, af)
	}
	return osf, nil
}

// osFile finds the *os.File under an afero file, looking through
// BasePathFs's wrapper.
func osFile(af afero.File) (*os.File, bool) {
	for {
		switch v := af.(type) {
		case *os.File:
			return v, true
		case *afero.BasePathFile:
			af = v.File
		default:
			return nil, false
		}
	}
}

// Remove deletes the file. A missing file is ErrNotFound.
func (f *File) Remove() error {
	if err := f.fs.Remove(f.path); err != nil {
		return region.OpenError(f.path, err)
	}
	return nil
}

// Remove deletes the segment file at path on the OS filesystem.
func Remove(path string) error { return Path(path).Remove() }
