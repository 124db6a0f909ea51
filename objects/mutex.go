package objects

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
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
// Uncontended, Lock is one compare-and-swap and Unlock a plain store
// and a load: no locked instruction and no system call (see the layout
// below for why that is safe). A contended Lock spins a little, then sleeps on a futex;
// at most one goroutine per process sleeps per Mutex (the others wait in
// Go, where LockContext can cancel them), since each holds an OS thread.
//
// In a segment opened read-only every method is mapped.ErrReadOnly; a
// Mutex outside an open segment (a copy in Go memory) panics.
//
// Layout (8 bytes): one word. Its low half is 0 when the mutex is
// unlocked; when it is locked the word is the holder's
// mapped.Segment.OwnerID (seat+1 in bits 0-6, so the low half is never 0,
// the attach id from bit 8), with bit 63 set while processes may sleep
// waiting for it. An unlocked word may keep the last holder's bits 32-62
// (and, for a moment, bit 63): only the low half says free. The futex is
// the high half, the one that holds bit 63.
//
// Why Unlock needs no locked instruction. Unlock checks that the word is
// its own id with bit 63 clear, stores 0 into the low half only, then
// loads the high half; if bit 63 is set there it clears it (a
// compare-and-swap) and wakes one sleeper. The store may still sit in its
// CPU's store buffer when that load runs, so a waiter that sets bit 63
// meanwhile might not be seen. So a waiter, after setting bit 63, runs
// membarrier(2)'s global expedited barrier, which makes the running
// threads of every registered process drain their stores, and then looks
// again: if the word is not what it saw (the holder's store landed), it
// does not sleep; if it is, the holder's store comes after the barrier,
// so its load sees bit 63 and it wakes a sleeper. A waiter sleeps on the
// futex only while the high half still has bit 63 set, and every unlock
// that wakes clears it first, so no wake-up falls between the look and
// the sleep; the one it wakes sets the bit again when it takes the lock
// or goes back to sleep, for the others. A process uses this Unlock once
// it registered for the barrier (its first Unlock starts that), and only
// on amd64, whose stores become visible in program order (elsewhere the
// critical section's stores could pass the releasing one). Where
// membarrier(2) is refused, Unlock is a compare-and-swap (as it is until
// the registration, made in the background, is done), and a waiter
// whose barrier is refused sleeps 200 µs at a time, to bound a missed
// wake-up. Two Unlocks racing in the holding process (a bug, as with
// sync.Mutex) may both succeed and release a later holder's lock: Unlock
// reports ErrNotHeld reliably only for an open that does not hold it.
type Mutex struct {
	w uint64
}

const (
	mutexName   = "Mutex"
	lockWaiters = uint64(1) << 63
)

// holderOf is the holder's id in lock word v, 0 when it is unlocked.
func holderOf(v uint64) uint64 {
	if uint32(v) == 0 {
		return 0
	}
	return v &^ lockWaiters
}

// ownerOf is this open's id as a lock word holds it.
func ownerOf(seg *mapped.Segment) uint64 { return seg.OwnerID() &^ lockWaiters }

// fenced says this process registered for futex.Fence, so that its
// Unlocks may release with a plain store.
var fenced atomic.Bool

// mutexSleeps counts this process's sleeps in a Mutex's futex, and
// mutexMissed the sleeps that timed out to find the mutex unlocked (a
// wake-up that never came, or an Unlock just after the timeout): the
// tests read them.
var mutexSleeps, mutexMissed atomic.Int64

// registerFence registers this process for futex.Fence, once, in the
// background: registering waits for an RCU grace period (about 10 ms
// here), which the Unlock that asks for it should not. Until it is done
// Unlock takes the compare-and-swap path; fenceDone is closed then.
var registerFence = sync.OnceFunc(func() {
	go func() {
		if futex.RegisterFence() == nil {
			fenced.Store(true)
		}
		close(fenceDone)
	}()
})

var fenceDone = make(chan struct{})

// Lock locks m, waiting while another process or goroutine holds it.
// ErrOwnerDied says the holder died; the lock is held by the caller then
// too.
func (m *Mutex) Lock() error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if seg != nil && seg.CanChange() && m.lockFast(seg) {
		return nil
	}
	return m.lockSlow(context.Background(), seg, "Lock")
}

// LockContext is Lock that gives up when ctx ends, returning its error
// (wrapped) without the lock.
func (m *Mutex) LockContext(ctx context.Context) error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if seg != nil && seg.CanChange() && m.lockFast(seg) {
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
	me := ownerOf(seg)
	for {
		v := atomic.LoadUint64(&m.w)
		holder := holderOf(v)
		if holder == 0 {
			if atomic.CompareAndSwapUint64(&m.w, v, me|v&lockWaiters) {
				return true, nil
			}
			continue
		}
		if seg.OwnerAlive(holder) {
			return false, nil
		}
		if atomic.CompareAndSwapUint64(&m.w, v, me|v&lockWaiters) {
			return true, takeOver(seg, mutexName, "TryLock", unsafe.Pointer(m), holder)
		}
	}
}

// lockFast takes m if it is free and nobody sleeps on it: one
// compare-and-swap. The word may keep a former holder's bits 32-62 (its
// Unlock cleared only the low half; attach ids past 2^24): then it looks
// at the word and tries again. Loading the word first cost about 2 ns on
// every Lock (measured; likely the load waiting for the Unlock's 4-byte
// store, which it cannot take its 8 bytes from).
func (m *Mutex) lockFast(seg *mapped.Segment) bool {
	me := ownerOf(seg)
	if atomic.CompareAndSwapUint64(&m.w, 0, me) {
		return true
	}
	v := atomic.LoadUint64(&m.w)
	return uint32(v) == 0 && v&lockWaiters == 0 && atomic.CompareAndSwapUint64(&m.w, v, me)
}

// fenceRefusedPoll is how long a waiter sleeps at a time when its
// barrier was refused: a plain-store Unlock may then miss its bit.
const fenceRefusedPoll = 200 * time.Microsecond

// prepareSleep readies a waiter to sleep on m while the lock word is v
// (locked): it sets bit 63 so that the holder's Unlock wakes a sleeper,
// runs the barrier that makes a plain-store Unlock visible (see Mutex),
// and looks again. It returns the word to sleep on, how long at most,
// and false when the word changed meanwhile (then the caller looks again
// instead of sleeping).
func (m *Mutex) prepareSleep(v uint64) (uint64, time.Duration, bool) {
	if v&lockWaiters == 0 {
		if !atomic.CompareAndSwapUint64(&m.w, v, v|lockWaiters) {
			return 0, 0, false
		}
		v |= lockWaiters
	}
	// The holder may release with a plain store still in its store
	// buffer, having looked for bit 63 before it was set: after the
	// barrier that store is visible, so look again.
	d := ownerPoll
	if futex.Fence() != nil {
		d = fenceRefusedPoll
	}
	return v, d, atomic.LoadUint64(&m.w) == v
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
	f := high32(&m.w)
	defer wakeOnDone(ctx, f)()
	me := ownerOf(seg)
	contended, check, timedOut := false, true, false
	// A sleeper woken by an Unlock that leaves without the lock (its
	// context ended, the segment closed) passes the wake-up on: the
	// Unlock cleared bit 63 and woke only it.
	taken := false
	defer func() {
		if contended && !taken {
			futex.Wake(f, 1)
		}
	}()
	for i := 0; ; i++ {
		if err := writable(seg, mutexName, method); err != nil {
			return err // closed meanwhile
		}
		if err := ctx.Err(); err != nil {
			return ctxErr(seg, mutexName, method, p, err)
		}
		v := atomic.LoadUint64(&m.w)
		holder := holderOf(v)
		if timedOut && holder == 0 {
			mutexMissed.Add(1)
		}
		timedOut = false
		if holder == 0 {
			nv := me | v&lockWaiters // a sleeper's bit stays
			if contended {
				nv |= lockWaiters // others may sleep too: our Unlock must wake one
			}
			if atomic.CompareAndSwapUint64(&m.w, v, nv) {
				taken = true
				return nil
			}
			continue
		}
		if check {
			check = false
			if !seg.OwnerAlive(holder) {
				if atomic.CompareAndSwapUint64(&m.w, v, me|v&lockWaiters) {
					taken = true
					return takeOver(seg, mutexName, method, p, holder)
				}
				continue
			}
		}
		if !spin(i) {
			continue
		}
		v, d, sleep := m.prepareSleep(v)
		if !sleep {
			continue
		}
		contended = true
		mutexSleeps.Add(1)
		if !futex.Wait(f, uint32(v>>32), d) {
			check, timedOut = true, true // timed out: is the holder alive?
		}
	}
}

// Unlock unlocks m. ErrNotHeld says this open does not hold it (and
// nothing changed).
func (m *Mutex) Unlock() error {
	seg := mapped.SegmentAt(unsafe.Pointer(m))
	if plainUnlock && seg != nil && fenced.Load() {
		if me := ownerOf(seg); me != 0 && atomic.LoadUint64(&m.w) == me {
			// Held by this open, nobody asleep: release with a plain store
			// to the low half (only the holder changes it from its id),
			// then look for a sleeper that came meanwhile (see Mutex).
			*word32(&m.w) = 0
			if atomic.LoadUint32(high32(&m.w))&uint32(lockWaiters>>32) != 0 {
				wakeWaiter(&m.w)
			}
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
	registerFence() // from then on Unlock takes the fast path
	return unlockWord(&m.w, ownerOf(seg), func() error { return notHeld(seg, mutexName, "Unlock", p) })
}

// unlockWord releases the lock word w held by me and wakes a sleeper if
// bit 63 says there may be one; a word that names another holder is
// notHeld's error.
func unlockWord(w *uint64, me uint64, notHeld func() error) error {
	for {
		v := atomic.LoadUint64(w)
		if holderOf(v) != me || me == 0 {
			return notHeld()
		}
		if atomic.CompareAndSwapUint64(w, v, 0) {
			if v&lockWaiters != 0 {
				futex.Wake(high32(w), 1)
			}
			return nil
		}
	}
}

// wakeWaiter clears bit 63 of the lock word w, which an Unlock found set
// after it released the word, and wakes one sleeper. Clearing it first
// changes the futex word, so a waiter between its last look and its sleep
// does not sleep (see Mutex).
func wakeWaiter(w *uint64) {
	for {
		v := atomic.LoadUint64(w)
		if v&lockWaiters == 0 || atomic.CompareAndSwapUint64(w, v, v&^lockWaiters) {
			break
		}
	}
	futex.Wake(high32(w), 1)
}
