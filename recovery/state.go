package recovery

import "fmt"

// State is a segment's shutdown state.
type State uint32

const (
	// StateNew: no state; the open that reports it created the segment.
	StateNew State = 0
	// StateCreating: creation began and has not finished (older builds
	// wrote it; a segment found in it is refused).
	StateCreating State = 1
	// StateAttached: in use: a writable process changed it since it was
	// last closed cleanly, and writable processes have it open (or died
	// with it open).
	StateAttached State = 2
	// StateClosed: the last writer closed it cleanly (and flushed it), and
	// nobody has changed it since; writable processes may have it open
	// and only read.
	StateClosed State = 3
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateCreating:
		return "creating"
	case StateAttached:
		return "attached"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}
