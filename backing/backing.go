// Package backing names where a mapstore segment lives: a [Backing] is a
// file path or a shared memory name. The two implementations are
// [github.com/mapstore/mapstore/backing/file] (a regular file, reached
// through an afero filesystem) and [github.com/mapstore/mapstore/backing/shm]
// (a POSIX shared memory object, a file under /dev/shm on Linux).
//
// A Backing is a cheap description; mapped.Open opens it. Opening, mapping
// and locking are machinery of this module (the internal region package),
// so the interface can only be implemented here.
package backing

import (
	"io/fs"

	"github.com/mapstore/mapstore/internal/region"
)

// Errors returned by backings. They are wrapped with the operation and the
// path or name; test for them with errors.Is. Package mapped re-exports
// them under the same names.
var (
	// ErrExists: the backing was to be created but already exists.
	ErrExists = region.ErrExists
	// ErrNotFound: the backing does not exist.
	ErrNotFound = region.ErrNotFound
	// ErrInvalidName: a shared memory name or path that cannot be used.
	ErrInvalidName = region.ErrInvalidName
	// ErrNoSpace: the filesystem or tmpfs is full, or a size limit was hit.
	ErrNoSpace = region.ErrNoSpace
	// ErrNoDescriptor: the filesystem gives no operating-system file
	// descriptor, so the file cannot be mapped.
	ErrNoDescriptor = region.ErrNoDescriptor
	// ErrNotRegular: the path names a directory or another non-regular file.
	ErrNotRegular = region.ErrNotRegular
)

// Backing is where a segment lives: a file path or a shared memory name.
// Values are cheap descriptions; nothing is opened until mapped.Open.
type Backing interface {
	// Name identifies the backing in messages: the path of a file, or
	// "shm:NAME" for shared memory.
	Name() string
	// Open opens (and with region.Create, creates) the backing. It is
	// called by mapped.Open.
	Open(flags region.Flags, perm fs.FileMode) (*region.Region, error)
	// Remove deletes the backing. Processes that have it mapped keep their
	// mapping; new opens no longer find it.
	Remove() error
}
