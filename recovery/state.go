package recovery

import "fmt"

// State is a segment's shutdown state.
type State uint32

const (
	// StateCreating: creation began and has not finished.
	StateCreating State = 1
	// StateAttached: writable processes have it open (or died with it open).
	StateAttached State = 2
	// StateClosed: the last writer closed it cleanly and flushed it.
	StateClosed State = 3
)

func (s State) String() string {
	switch s {
	case StateCreating:
		return "creating"
	case StateAttached:
		return "attached"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}
