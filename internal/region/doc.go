// Package region is the machinery under package backing: an open backing
// file (a [Region]) and everything that needs its descriptor: mapping at a
// stable address, growing in place, flushing and open-file-description
// (OFD) byte-range locks. The backings in backing/file and backing/shm open
// regions; the envelope maps and locks them. Nothing above the envelope
// calls mmap or open.
package region

import "errors"

// Errors, re-exported by package backing (and, through it, by mapped).
// They are wrapped with the operation and the path or name.
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

// Flags say how a backing is opened.
type Flags uint8

const (
	// Create makes a new backing, seen by nobody until Region.Publish
	// links it into place (see Open).
	Create Flags = 1 << iota
	// ReadOnly opens the descriptor for reading only.
	ReadOnly
)
