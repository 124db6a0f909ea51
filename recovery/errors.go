package recovery

import "errors"

// Errors that say a segment cannot be used as it is. Package mapped
// re-exports them (mapped.ErrCorrupt, mapped.ErrVersion); test for them
// with errors.Is.
var (
	// ErrCorrupt: the segment is damaged or is not a mapstore segment.
	ErrCorrupt = errors.New("corrupt segment")
	// ErrVersion: the segment was written in a format this build cannot read.
	ErrVersion = errors.New("unsupported segment format")
)
