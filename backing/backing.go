// Package backing is the lowest layer of mapstore: a mappable region of
// bytes that several processes can open at once.
//
// A [Backing] names where a segment lives. The two implementations are
// [github.com/mapstore/mapstore/backing/file] (a regular file, reached
// through an afero filesystem) and [github.com/mapstore/mapstore/backing/shm]
// (a POSIX shared memory object, a file under /dev/shm on Linux). Both open
// to a [*Region], which holds the file descriptor and does everything that
// needs one: mapping at a stable address, growing in place with fallocate
// and ftruncate, flushing, and open-file-description (OFD) byte-range locks.
//
// Nothing above this package calls mmap or open.
package backing

import (
	"errors"
	"io/fs"
)

// Errors returned by backings. They are wrapped with the operation and the
// path or name; test for them with errors.Is.
var (
	// ErrExists: the backing was to be created but already exists.
	ErrExists = errors.New("already exists")
	// ErrNotFound: the backing does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidName: a shared memory name or path that cannot be used.
	ErrInvalidName = errors.New("invalid name")
	// ErrNoSpace: the filesystem or tmpfs is full, or a size limit was hit.
	ErrNoSpace = errors.New("no space")
	// ErrNoDescriptor: the filesystem gives no operating-system file
	// descriptor, so the file cannot be mapped.
	ErrNoDescriptor = errors.New("filesystem gives no file descriptor to map")
	// ErrNotRegular: the path names a directory or another non-regular file.
	ErrNotRegular = errors.New("not a regular file")
)

// Backing is where a segment lives: a file path or a shared memory name.
// Values are cheap descriptions; nothing is opened until Open.
type Backing interface {
	// Name identifies the backing in messages: the path of a file, or
	// "shm:NAME" for shared memory.
	Name() string
	// Open opens (and with Create, creates) the backing.
	Open(flags Flags, perm fs.FileMode) (*Region, error)
	// Remove deletes the backing. Processes that have it mapped keep their
	// mapping; new opens no longer find it.
	Remove() error
}

// Flags say how a backing is opened.
type Flags uint8

const (
	// Create creates the backing if it does not exist.
	Create Flags = 1 << iota
	// Exclusive, with Create, fails with ErrExists if it exists.
	Exclusive
	// ReadOnly opens the descriptor for reading only.
	ReadOnly
)
