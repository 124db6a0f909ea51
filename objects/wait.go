package objects

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/mapped"
)

// What the synchronisation primitives share: their errors, the futex
// waits with a timeout (to test a holder's liveness, and for the context
// to be looked at), and the per-process gate in front of a lock's sleep.

var (
	// ErrOwnerDied: the process that held the lock died holding it. The
	// call that returns it holds the lock all the same, and what the dead
	// process left half done in the segment (its lanes: container calls,
	// and the segment lock's operation) was rolled back or finished first.
	// What it changed with plain stores under the lock stays as it left
	// it: check it.
	ErrOwnerDied = errors.New("lock owner died")
	// ErrNotHeld: Unlock (or RUnlock) of a lock this open does not hold.
	ErrNotHeld = errors.New("lock not held by this process")
)

// ownerPoll is how long a waiter sleeps before it looks at whether the
// holder is alive (and at its context): a holder's death is found within
// about this long.
const ownerPoll = 20 * time.Millisecond

// spins is how many times a waiter yields, looking, before it sleeps.
const spins = 30

// word32 is the low half of the 64-bit word at w (its bits 0-31,
// little-endian): a Mutex's holder half.
func word32(w *uint64) *uint32 { return (*uint32)(unsafe.Pointer(w)) }

// high32 is the high half of the 64-bit word at w (its bits 32-63): a
// Mutex's futex, with the waiters bit.
func high32(w *uint64) *uint32 { return (*uint32)(unsafe.Add(unsafe.Pointer(w), 4)) }

// gates holds, per lock address, this process's gate: a goroutine holds
// it while it waits in the lock's slow path, so at most one goroutine of
// a process sleeps in FUTEX_WAIT (and holds an OS thread) per lock; the
// others wait here, in Go, cancellably.
var gates sync.Map // uintptr -> chan struct{}

func gateFor(p unsafe.Pointer) chan struct{} {
	if g, ok := gates.Load(uintptr(p)); ok {
		return g.(chan struct{})
	}
	g, _ := gates.LoadOrStore(uintptr(p), make(chan struct{}, 1))
	return g.(chan struct{})
}

// enterGate takes the gate of the lock at p, or gives up with the
// context's error.
func enterGate(ctx context.Context, p unsafe.Pointer) (chan struct{}, error) {
	g := gateFor(p)
	select {
	case g <- struct{}{}:
		return g, nil
	default:
	}
	select {
	case g <- struct{}{}:
		return g, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wakeOnDone makes the context's end wake the sleepers on w (in every
// process: they look again and sleep again), so that a waiter sees its
// cancellation at once. It returns the function that stops it.
func wakeOnDone(ctx context.Context, w *uint32) func() bool {
	if ctx.Done() == nil {
		return func() bool { return false }
	}
	return context.AfterFunc(ctx, func() { futex.WakeAll(w) })
}

// spin yields for the i'th time of a wait, and reports whether the
// waiter should sleep instead.
func spin(i int) bool {
	if i < spins {
		runtime.Gosched()
		return false
	}
	return true
}

// ownerDied is the error of a lock taken over from the dead owner id;
// rerr is what the recovery of its work said (nil: all was well).
func ownerDied(seg *mapped.Segment, typ, method string, p unsafe.Pointer, id uint64, rerr error) error {
	err := fmt.Errorf("mapstore: objects.%s.%s at offset %d in %s: the process in seat %d died holding it; its unfinished segment calls were rolled back: %w", typ, method, offOf(seg, p), seg.Name(), int(id&0x7f)-1, ErrOwnerDied)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

func notHeld(seg *mapped.Segment, typ, method string, p unsafe.Pointer) error {
	return fmt.Errorf("mapstore: objects.%s.%s at offset %d in %s: %w", typ, method, offOf(seg, p), seg.Name(), ErrNotHeld)
}

func ctxErr(seg *mapped.Segment, typ, method string, p unsafe.Pointer, err error) error {
	return fmt.Errorf("mapstore: objects.%s.%s at offset %d in %s: %w", typ, method, offOf(seg, p), seg.Name(), err)
}

// takeOver is what a locker does once it took the lock from a dead
// owner: recover the segment (the dead owner's lanes and its segment
// lock), and say so.
func takeOver(seg *mapped.Segment, typ, method string, p unsafe.Pointer, dead uint64) error {
	return ownerDied(seg, typ, method, p, dead, seg.Recover())
}
