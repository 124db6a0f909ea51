package objects

import (
	"context"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/mapped"
)

// Mutex is a mutual exclusion lock that lives in a segment and is shared
// by the goroutines of every process that maps it. Its zero value is
// unlocked: make it a field of a value in the segment (or construct it
// by name) and call it through the pointer you get.
//
// A Mutex is held by an open of the segment (a process), not by a
// goroutine: like sync.Mutex, one goroutine may lock it and another of
// the same process unlock it. It is not reentrant.
//
// It is robust: if the process that holds it dies (SIGKILL, a crash, or
// an open closed while holding it), the next locker gets the lock with
// ErrOwnerDied, after the dead process's unfinished segment calls (its
// lanes: container calls cut short, and an allocation under the segment
// lock) were rolled back or finished. A waiter finds the death within
// about 20 ms (it sleeps in FUTEX_WAIT with a timeout and then tests the
// holder's liveness); a Lock that finds the lock held by a process long
// gone takes it over at once.
//
// Uncontended, Lock is one compare-and-swap and Unlock another, with no
// system call. A contended Lock spins a little, then sleeps on a futex;
// at most one goroutine per process sleeps per Mutex (the others wait in
// Go, where LockContext can cancel them), since each holds an OS thread.
//
// In a segment opened read-only every method is mapped.ErrReadOnly; a
// Mutex outside an open segment (a copy in Go memory) panics.
//
// Layout (8 bytes): one word, 0 when unlocked, else the holder's
// mapped.Segment.OwnerID with bit 7 set while processes may sleep
// waiting for it (its Unlock then wakes one). The futex is its low half.
type Mutex struct {
	w uint64
}

const (
	mutexName    = "Mutex"
	lockWaiters  = 0x80
	lockHolderOf = ^uint64(lockWaiters)
)

// Lock locks m, waiting while another process or goroutine holds it.
// ErrOwnerDied says the holder died; the lock is held by the caller then
// too.
func (m *Mutex) Lock() error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if seg != nil && seg.CanChange() && atomic.CompareAndSwapUint64(&m.w, 0, seg.OwnerID()) {
		return nil
	}
	return m.lockSlow(context.Background(), seg, "Lock")
}

// LockContext is Lock that gives up when ctx ends, returning its error
// (wrapped) without the lock.
func (m *Mutex) LockContext(ctx context.Context) error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if seg != nil && seg.CanChange() && atomic.CompareAndSwapUint64(&m.w, 0, seg.OwnerID()) {
		return nil
	}
	return m.lockSlow(ctx, seg, "LockContext")
}

// TryLock locks m if it is free, or held by a process that died (then
// with ErrOwnerDied), and reports whether it did. It never waits.
func (m *Mutex) TryLock() (bool, error) {
	seg := segFor(unsafe.Pointer(m), mutexName, "TryLock")
	if err := writable(seg, mutexName, "TryLock"); err != nil {
		return false, err
	}
	me := seg.OwnerID()
	for {
		v := atomic.LoadUint64(&m.w)
		if v&lockHolderOf == 0 {
			if atomic.CompareAndSwapUint64(&m.w, v, me|v) {
				return true, nil
			}
			continue
		}
		if seg.OwnerAlive(v & lockHolderOf) {
			return false, nil
		}
		if atomic.CompareAndSwapUint64(&m.w, v, me|v&lockWaiters) {
			return true, takeOver(seg, mutexName, "TryLock", unsafe.Pointer(m), v&lockHolderOf)
		}
	}
}

func (m *Mutex) lockSlow(ctx context.Context, seg *mapped.Segment, method string) error {
	p := unsafe.Pointer(m)
	if seg == nil {
		seg = segFor(p, mutexName, method) // panics
	}
	if err := writable(seg, mutexName, method); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(seg, mutexName, method, p, err)
	}
	gate, err := enterGate(ctx, p)
	if err != nil {
		return ctxErr(seg, mutexName, method, p, err)
	}
	defer func() { <-gate }()
	f := word32(&m.w)
	defer wakeOnDone(ctx, f)()
	me := seg.OwnerID()
	contended, check := false, true
	for i := 0; ; i++ {
		if err := writable(seg, mutexName, method); err != nil {
			return err // closed meanwhile
		}
		if err := ctx.Err(); err != nil {
			return ctxErr(seg, mutexName, method, p, err)
		}
		v := atomic.LoadUint64(&m.w)
		holder := v & lockHolderOf
		if holder == 0 {
			nv := me
			if contended {
				nv |= lockWaiters // others may sleep too: our Unlock must wake one
			}
			if atomic.CompareAndSwapUint64(&m.w, v, nv) {
				return nil
			}
			continue
		}
		if check {
			check = false
			if !seg.OwnerAlive(holder) {
				if atomic.CompareAndSwapUint64(&m.w, v, me|v&lockWaiters) {
					return takeOver(seg, mutexName, method, p, holder)
				}
				continue
			}
		}
		if !spin(i) {
			continue
		}
		if v&lockWaiters == 0 {
			if !atomic.CompareAndSwapUint64(&m.w, v, v|lockWaiters) {
				continue
			}
			v |= lockWaiters
		}
		contended = true
		if !futex.Wait(f, uint32(v), ownerPoll) {
			check = true // timed out: is the holder alive?
		}
	}
}

// Unlock unlocks m. ErrNotHeld says this open does not hold it (and
// nothing changed).
func (m *Mutex) Unlock() error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if seg != nil {
		if me := seg.OwnerID(); me != 0 && atomic.CompareAndSwapUint64(&m.w, me, 0) {
			return nil
		}
	}
	return m.unlockSlow(seg)
}

func (m *Mutex) unlockSlow(seg *mapped.Segment) error {
	p := unsafe.Pointer(m)
	if seg == nil {
		seg = segFor(p, mutexName, "Unlock") // panics
	}
	if err := writable(seg, mutexName, "Unlock"); err != nil {
		return err
	}
	return unlockWord(&m.w, seg.OwnerID(), func() error { return notHeld(seg, mutexName, "Unlock", p) })
}

// unlockWord releases the lock word w held by me and wakes a sleeper if
// bit 7 says there may be one; a word that names another holder is
// notHeld's error.
func unlockWord(w *uint64, me uint64, notHeld func() error) error {
	for {
		v := atomic.LoadUint64(w)
		if v&lockHolderOf != me || me == 0 {
			return notHeld()
		}
		if atomic.CompareAndSwapUint64(w, v, 0) {
			if v&lockWaiters != 0 {
				futex.Wake(word32(w), 1)
			}
			return nil
		}
	}
}
