package mapped

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// How a segment operation runs: the state guard, the segment lock, the
// undo journal, and what happens when an operation panics, when the
// segment closes under it, or when it finds the segment corrupt.

// Segment states (Segment.state). A call checks the word before it
// touches the mapping and again once it holds the segment lock.
const (
	stClosed   = 1 << iota // Close has begun: every call is ErrClosed
	stCorrupt              // an operation found the segment corrupt: every call that reads or writes its structures is ErrCorrupt
	stReadOnly             // opened read-only: every change is ErrReadOnly
	stNotInUse             // writable, and this open has not yet marked the segment in use (markInUse)

	stUnusable       = stClosed | stCorrupt              // refuses reads too
	stRefusesChanges = stClosed | stCorrupt | stReadOnly // refuses changes
)

// stateErr is the error of a call refused because of state st.
func (s *Segment) stateErr(op string, st uint32) error {
	switch {
	case st&stClosed != 0:
		return s.errClosed(op)
	case st&stCorrupt == 0:
		return fmt.Errorf("mapstore: %s %s: opened read-only: %w", op, s.b.Name(), ErrReadOnly)
	}
	return fmt.Errorf("mapstore: %s %s: the segment was found corrupt (%s); open it again to recover, or read it with OpenReadOnly: %w", op, s.b.Name(), s.corruptWhy(), ErrCorrupt)
}

func (s *Segment) errClosed(op string) error {
	return fmt.Errorf("mapstore: %s %s: %w", op, s.b.Name(), ErrClosed)
}

// corruptWhy is what the first operation that found the segment corrupt
// said.
func (s *Segment) corruptWhy() string {
	if p := s.whyCorrupt.Load(); p != nil {
		return *p
	}
	return "unknown"
}

// noteCorrupt marks the segment corrupt when err says it is (found with
// the segment lock held, so not a torn optimistic read): later calls
// refuse to walk it. It returns err.
func (s *Segment) noteCorrupt(err error) error {
	if err != nil && errors.Is(err, ErrCorrupt) && s.state.Load()&stCorrupt == 0 {
		why := err.Error()
		s.whyCorrupt.CompareAndSwap(nil, &why)
		s.state.Or(stCorrupt)
	}
	return err
}

// errf wraps err for op; a corrupt segment is marked so, and an error
// of a call that Close overtook is ErrClosed.
func (s *Segment) errf(op string, err error) error {
	if st := s.state.Load(); st&stClosed != 0 {
		return s.errClosed(op)
	}
	return &opError{op: op, name: s.b.Name(), err: s.noteCorrupt(err)}
}

// opError is an error of operation op on the segment name: "mapstore: op
// name: " and err, whose own text does not say the name again (the lower
// layers put it first, for their callers that do not).
type opError struct {
	op, name string
	err      error
}

func (e *opError) Error() string {
	return "mapstore: " + e.op + " " + e.name + ": " + strings.TrimPrefix(e.err.Error(), e.name+": ")
}

func (e *opError) Unwrap() error { return e.err }

// lockOnly takes the segment lock for a change without starting a
// journaled operation: the caller tries the fast path first (fast.go) and
// runs the slow one with runJournaled. It fails on closed, corrupt and
// read-only segments; once it holds the lock, Close waits for the caller.
func (s *Segment) lockOnly(op string) error {
	if s.state.Load() == 0 && s.lk.tryLock() {
		if s.state.Load() == 0 {
			return nil
		}
		s.lk.unlock()
	}
	return s.lockOnlySlow(op)
}

func (s *Segment) lockOnlySlow(op string) error {
	if st := s.state.Load(); st == stNotInUse {
		if err := s.markInUse(op); err != nil {
			return err
		}
	}
	if st := s.state.Load(); st != 0 {
		return s.stateErr(op, st)
	}
	if !s.lk.lock() {
		return s.stateErr(op, s.state.Load())
	}
	if st := s.state.Load(); st != 0 {
		s.lk.unlock()
		return s.stateErr(op, st)
	}
	return nil
}

// markInUse makes sure, before this open's first change, that the
// segment's header says it is in use, durably on a file backing
// (envelope.MarkInUse): an open that only reads leaves a segment that was
// closed cleanly marked closed, and syncs nothing. Every call that
// changes the segment through its own structures comes here first
// (lockOnly); after the first, it is one bit of the state word.
func (s *Segment) markInUse(op string) error {
	if s.state.Load()&stNotInUse == 0 {
		return nil
	}
	if err := s.env.MarkInUse(); err != nil {
		return s.errf(op, err)
	}
	s.state.And(^uint32(stNotInUse))
	return nil
}

// CanChange reports whether this open may change the segment now with
// nothing more to do: writable, not closing, and already marked in use.
// It is one load, and inlines: the fast path of a value in the segment
// that publishes its changes itself (a container's append). When it says
// false, call PrepareChange.
func (s *Segment) CanChange() bool {
	return s.state.Load()&(stClosed|stReadOnly|stNotInUse) == 0
}

// Closed reports whether Close has begun on this open. A value in the
// segment that finds its structures make no sense asks it first: a call
// that Close overtakes reads zeros where the segment was, or finds its
// size 0, and that is ErrClosed, not corruption.
func (s *Segment) Closed() bool { return s.state.Load()&stClosed != 0 }

// PrepareChange readies this open for a change that a value in the
// segment makes by itself (not through the segment's own calls, which do
// it): the first one of an open marks the segment in use (durably, on a
// file backing: see Flush). It is ErrReadOnly for a read-only open and
// ErrClosed once Close has begun; op names the call in the error.
func (s *Segment) PrepareChange(op string) error {
	st := s.state.Load()
	if st&stNotInUse != 0 && st&(stClosed|stReadOnly) == 0 {
		if err := s.markInUse(op); err != nil {
			return err
		}
		st = s.state.Load()
	}
	if st&(stClosed|stReadOnly) != 0 {
		return s.stateErr(op, st)
	}
	return nil
}

// journaled runs f as the crash-atomic operation op: under the segment
// lock, with every word it changes recorded in the undo journal.
//
// An operation that finds no space runs once more if this process's block
// caches, or dead processes', had something to give back (emptyCaches).
func (s *Segment) journaled(what string, op uint64, f func() error) error {
	if err := s.lockOnly(what); err != nil {
		return err
	}
	err := s.runJournaled(op, f)
	if isNoSpace(err) && s.emptyCaches() {
		if err := s.lockOnly(what); err != nil {
			return err
		}
		err = s.runJournaled(op, f)
	}
	return err
}

// runJournaled is journaled with the lock already held (lockOnly). If f
// panics (a user callback, or an operation that overflows the journal) or
// its goroutine exits, the operation is rolled back and the lock released
// before the panic goes on up: no process is left waiting on a lock whose
// owner is alive, and nothing is half done.
func (s *Segment) runJournaled(op uint64, f func() error) (err error) {
	s.h.j.Begin(op)
	done := false
	defer func() {
		if done {
			return
		}
		r := recover()
		s.abort(fmt.Sprintf("an operation of this process cut short by %s", panicWhat(r)))
		if r != nil {
			panic(r)
		}
	}()
	err = f()
	done = true
	if fault := s.h.takeFault(); fault != nil {
		// A bad value met on the way: undo what the operation changed.
		s.abort("this process, which found the segment corrupt")
		return fault
	}
	s.h.j.End()
	s.lk.unlock()
	return err
}

func panicWhat(r any) string {
	if r == nil {
		return "its goroutine exiting"
	}
	return fmt.Sprintf("a panic (%v)", r)
}

// abort rolls back the operation in flight, which this process holds the
// lock for, and releases the lock.
func (s *Segment) abort(who string) {
	s.repMu.Lock()
	if err := s.h.rollBack(s.env.Size(), who, s.report.Addf); err != nil {
		s.report.Addf("could not roll back %s: %v", who, err)
		s.noteCorrupt(err)
	}
	s.repMu.Unlock()
	s.lk.unlock()
}

// read runs f, which only reads the segment's structures, so that it sees
// no operation half done: under the segment lock in a writable segment;
// optimistically in a read-only one (which cannot take the lock), run
// again until no writer took the lock meanwhile (ErrBusy if writers kept
// it from ever seeing a consistent view for two seconds). f must bound
// every read (it may run on a torn state, whose result is then thrown
// away).
func (s *Segment) read(op string, f func() error) error {
	st := s.state.Load()
	if st&stUnusable != 0 {
		return s.stateErr(op, st)
	}
	if st&stReadOnly != 0 {
		return s.readOptimistic(op, f)
	}
	if !s.lk.lock() {
		return s.stateErr(op, s.state.Load())
	}
	if st := s.state.Load(); st&stUnusable != 0 {
		s.lk.unlock()
		return s.stateErr(op, st)
	}
	err := f()
	s.lk.unlock()
	if err != nil {
		return s.errf(op, err)
	}
	return nil
}

// readOnlyPatience bounds how long a read-only read tries to read a
// consistent view while writers keep changing the segment.
const readOnlyPatience = 2 * time.Second

// heldByDead is the error of a read-only read that found the segment lock
// (word v) held by a process that died.
func (s *Segment) heldByDead(op string, v uint64) error {
	owner := int(v&lockOwnerMask) - 1
	return fmt.Errorf("mapstore: %s %s: process %d (seat %d) died holding the segment lock; a writable Open recovers the segment: %w", op, s.b.Name(), s.env.SeatPID(owner), owner, ErrCorrupt)
}

// readOptimistic is read for a read-only segment: f runs while no writer
// holds the lock, and its result counts only if none took it meanwhile.
// While a writer holds the lock the reader backs off (yielding, then
// sleeping up to a millisecond); a writer that died holding it cannot be
// rolled back from here, and is reported (ErrCorrupt) once the lock has
// stood still for a while.
func (s *Segment) readOptimistic(op string, f func() error) error {
	var stuck uint64
	var since, torn time.Time
	for try := 0; ; try++ {
		if st := s.state.Load(); st&stUnusable != 0 {
			return s.stateErr(op, st)
		}
		v, ok := s.lk.readBegin()
		if ok {
			err := f()
			if s.lk.readValid(v) {
				if err != nil {
					return s.errf(op, err)
				}
				return nil
			}
			// A writer ran meanwhile: read again, but not for ever. A read
			// longer than the gaps between a busy writer's operations may
			// never see one through.
			switch {
			case torn.IsZero():
				torn = time.Now()
			case time.Since(torn) > readOnlyPatience:
				return fmt.Errorf("mapstore: %s %s: writers changed the segment during every read for %v: %w", op, s.b.Name(), readOnlyPatience, ErrBusy)
			}
			runtime.Gosched()
			continue
		}
		switch {
		case v == s.deadLock.Load():
			return s.heldByDead(op, v)
		case try < 20:
			runtime.Gosched()
			continue
		case v != stuck:
			stuck, since = v, time.Now()
		case time.Since(since) > lockPoll:
			owner := int(v&lockOwnerMask) - 1
			if alive, err := s.env.SeatAlive(owner); err == nil && !alive {
				// Until someone recovers the segment (the word changes),
				// later reads fail at once.
				s.deadLock.Store(v)
				return s.heldByDead(op, v)
			}
			since = time.Now()
		}
		time.Sleep(min(time.Duration(try)*time.Microsecond, time.Millisecond))
	}
}
