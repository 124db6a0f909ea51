package mapped

import (
	"errors"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/recovery"
)

// Errors. Every error mapped returns wraps one of these (or an operating
// system error) with the operation and the path, name or offset it concerns;
// test for them with errors.Is. Several are the same values as the lower
// layers' sentinels, so errors.Is(err, mapped.ErrNotFound) holds whichever
// layer found the problem.
var (
	// ErrExists: CreateOnly found a segment already there, or a name is taken.
	ErrExists = backing.ErrExists
	// ErrNotFound: OpenOnly found no segment, or a name is not in the directory.
	ErrNotFound = backing.ErrNotFound
	// ErrInvalidName: a shared memory name, path or object name that cannot be used.
	ErrInvalidName = backing.ErrInvalidName
	// ErrNoSpace: the segment cannot grow enough (maximum size, WithFixedSize,
	// a full disk or tmpfs, copy-on-write), or all seats of the attached-process table are taken.
	ErrNoSpace = backing.ErrNoSpace
	// ErrNotRegular: the path is a directory or another non-regular file.
	ErrNotRegular = backing.ErrNotRegular
	// ErrCorrupt: the backing is not a mapstore segment, or is damaged.
	ErrCorrupt = recovery.ErrCorrupt
	// ErrVersion: the segment has a format this build cannot read.
	ErrVersion = recovery.ErrVersion
	// ErrReadOnly: a write to a segment opened with OpenReadOnly (or a change
	// that copy-on-write cannot make, such as growing).
	ErrReadOnly = envelope.ErrReadOnly
	// ErrClosed: the segment was closed.
	ErrClosed = envelope.ErrClosed
	// ErrBusy: other processes' use of the segment forbids the call (a
	// copy-on-write snapshot while writable opens are attached), or kept a
	// read-only open's read from ever seeing a consistent view.
	ErrBusy = envelope.ErrBusy
	// ErrInvalidHandle: a handle or block that is not a live block of this segment.
	ErrInvalidHandle = errors.New("invalid handle")
	// ErrInvalidOption: an option Open cannot use (see WithPerm).
	ErrInvalidOption = errors.New("invalid option")
	// ErrInvalidSize: a size option out of range (see WithSize), or a
	// request size that is zero, negative or overflows.
	ErrInvalidSize = errors.New("invalid size")
)
