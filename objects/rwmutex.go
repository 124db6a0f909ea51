package objects

import (
	"context"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/mapped"
)

// RWMutex is a reader/writer lock that lives in a segment, shared by the
// goroutines of every process that maps it: any number of read holds, or
// one writer. Its zero value is unlocked. Like Mutex, holds belong to an
// open of the segment (a process), not to a goroutine.
//
// It prefers writers: once a writer has claimed the lock, new readers
// wait until it is done, so a stream of readers cannot starve writers.
// A read hold may not be taken again recursively while a writer waits
// (as with sync.RWMutex, that deadlocks).
//
// It is robust. A writer that dies holding the lock (or waiting for
// readers to leave) is ErrOwnerDied to the next locker, reader or
// writer, after the dead process's unfinished segment calls were rolled
// back; the caller holds the lock it asked for. A reader that dies
// holding a read hold has its hold released: its slot names it, and a
// writer that waits finds it dead within about 20 ms (nothing is
// reported: a reader changed nothing).
//
// Read holds live in rwSlots slots, each naming the process holding it:
// at most rwSlots read holds (over all processes and goroutines) at once;
// a reader beyond that waits for a slot. Waiters sleep on a futex
// (an event count), waking at least every 20 ms to test the holders'
// liveness and their context.
//
// Layout (256 bytes):
//
//	0    writer: the OwnerID of the writer holding or claiming it, or 0
//	8    event count (futex) every release notifies; 4 bytes unused
//	16   rwSlots read slots: the OwnerID of a read hold's process, or 0
type RWMutex struct {
	w     uint64
	ev    event
	_     uint32
	slots [rwSlots]uint64
}

const (
	rwSlots = 30
	rwName  = "RWMutex"
)

// RLock takes a read hold on rw, waiting while a writer holds or claims
// it. ErrOwnerDied says a writer died holding it; the read hold is taken
// all the same.
func (rw *RWMutex) RLock() error { return rw.rlock(context.Background(), "RLock") }

// RLockContext is RLock that gives up when ctx ends.
func (rw *RWMutex) RLockContext(ctx context.Context) error {
	return rw.rlock(ctx, "RLockContext")
}

// TryRLock takes a read hold if no writer holds or claims rw and a slot
// is free, and reports whether it did; it never waits.
func (rw *RWMutex) TryRLock() (bool, error) {
	seg := segFor(unsafe.Pointer(rw), rwName, "TryRLock")
	if err := writable(seg, rwName, "TryRLock"); err != nil {
		return false, err
	}
	return rw.tryRead(seg.OwnerID()), nil
}

// tryRead claims a read slot if no writer is there.
func (rw *RWMutex) tryRead(me uint64) bool {
	if atomic.LoadUint64(&rw.w) != 0 {
		return false
	}
	s := rw.claimSlot(me)
	if s == nil {
		return false
	}
	if atomic.LoadUint64(&rw.w) == 0 {
		return true
	}
	// A writer came meanwhile: it goes first.
	atomic.StoreUint64(s, 0)
	rw.ev.notify()
	return false
}

// claimSlot claims a free read slot for me, or returns nil if none is.
func (rw *RWMutex) claimSlot(me uint64) *uint64 {
	start := int(me&0x7f) % rwSlots
	for k := range rwSlots {
		s := &rw.slots[(start+k)%rwSlots]
		if atomic.LoadUint64(s) == 0 && atomic.CompareAndSwapUint64(s, 0, me) {
			return s
		}
	}
	return nil
}

func (rw *RWMutex) rlock(ctx context.Context, method string) error {
	p := unsafe.Pointer(rw)
	seg := mapped.SegmentAt(p)
	if seg != nil && seg.CanChange() && rw.tryRead(seg.OwnerID()) {
		return nil
	}
	if seg == nil {
		seg = segFor(p, rwName, method) // panics
	}
	defer wakeOnDone(ctx, &rw.ev.v)()
	me := seg.OwnerID()
	check := true
	for i := 0; ; i++ {
		if err := writable(seg, rwName, method); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return ctxErr(seg, rwName, method, p, err)
		}
		if rw.tryRead(me) {
			return nil
		}
		if check {
			check = false
			if v := atomic.LoadUint64(&rw.w); v != 0 && !seg.OwnerAlive(v) && atomic.CompareAndSwapUint64(&rw.w, v, me) {
				// The writer died: recover what it left and take a read
				// slot while the writer's claim is ours, then let go of
				// it, so that the report goes with the hold. With no
				// slot free the claim goes back to the dead writer, for
				// the next locker to find and report.
				died := takeOver(seg, rwName, method, p, v)
				s := rw.claimSlot(me)
				if s != nil {
					v = 0
				}
				atomic.StoreUint64(&rw.w, v)
				rw.ev.notify()
				if s != nil {
					return died
				}
				continue
			}
			rw.sweepReaders(seg)
		}
		if !spin(i) {
			continue
		}
		ev := rw.ev.mark()
		if rw.tryRead(me) {
			return nil
		}
		if !futex.Wait(&rw.ev.v, ev, ownerPoll) {
			check = true
		}
	}
}

// sweepReaders releases the read holds of processes that died, and
// reports whether it found one.
func (rw *RWMutex) sweepReaders(seg *mapped.Segment) bool {
	found := false
	for k := range rw.slots {
		s := &rw.slots[k]
		if id := atomic.LoadUint64(s); id != 0 && !seg.OwnerAlive(id) && atomic.CompareAndSwapUint64(s, id, 0) {
			found = true
		}
	}
	if found {
		rw.ev.notify()
	}
	return found
}

// RUnlock releases a read hold of this open's. ErrNotHeld says it has
// none.
func (rw *RWMutex) RUnlock() error {
	p := unsafe.Pointer(rw)
	seg := segFor(p, rwName, "RUnlock")
	if !seg.CanChange() {
		if err := writable(seg, rwName, "RUnlock"); err != nil {
			return err
		}
	}
	me := seg.OwnerID()
	start := int(me&0x7f) % rwSlots
	for k := range rwSlots {
		s := &rw.slots[(start+k)%rwSlots]
		if atomic.LoadUint64(s) == me && atomic.CompareAndSwapUint64(s, me, 0) {
			rw.ev.notify()
			return nil
		}
	}
	return notHeld(seg, rwName, "RUnlock", p)
}

// Lock takes rw for writing, waiting for the writer before it and for
// every read hold to go. ErrOwnerDied says the writer before died holding
// it; the lock is the caller's all the same.
func (rw *RWMutex) Lock() error { return rw.lock(context.Background(), "Lock") }

// LockContext is Lock that gives up when ctx ends, without the lock.
func (rw *RWMutex) LockContext(ctx context.Context) error { return rw.lock(ctx, "LockContext") }

// TryLock takes rw for writing if nobody holds it (or its writer died:
// then with ErrOwnerDied), and reports whether it did; it never waits.
func (rw *RWMutex) TryLock() (bool, error) {
	p := unsafe.Pointer(rw)
	seg := segFor(p, rwName, "TryLock")
	if err := writable(seg, rwName, "TryLock"); err != nil {
		return false, err
	}
	me := seg.OwnerID()
	var died error
	var dead uint64
	if !atomic.CompareAndSwapUint64(&rw.w, 0, me) {
		v := atomic.LoadUint64(&rw.w)
		if v == 0 || seg.OwnerAlive(v) || !atomic.CompareAndSwapUint64(&rw.w, v, me) {
			return false, nil
		}
		died, dead = takeOver(seg, rwName, "TryLock", p, v), v
	}
	if rw.readers() && !(rw.sweepReaders(seg) && !rw.readers()) {
		// Not taken: a writer taken over keeps its claim, for the
		// locker that gets the lock to be told.
		atomic.StoreUint64(&rw.w, dead)
		rw.ev.notify()
		return false, nil
	}
	return true, died
}

// readers reports whether a read slot is taken.
func (rw *RWMutex) readers() bool {
	for k := range rw.slots {
		if atomic.LoadUint64(&rw.slots[k]) != 0 {
			return true
		}
	}
	return false
}

func (rw *RWMutex) lock(ctx context.Context, method string) error {
	p := unsafe.Pointer(rw)
	seg := mapped.SegmentAt(p)
	claimed := false
	if seg != nil && seg.CanChange() && atomic.CompareAndSwapUint64(&rw.w, 0, seg.OwnerID()) {
		if !rw.readers() {
			return nil
		}
		claimed = true
	}
	if seg == nil {
		seg = segFor(p, rwName, method) // panics
	}
	defer wakeOnDone(ctx, &rw.ev.v)()
	// The writer word names the process, not the goroutine: claimed says
	// whether this call is the one that claimed it.
	me := seg.OwnerID()
	var died error
	var dead uint64 // the writer taken over, whose claim a call that gives up hands back
	check := true
	for i := 0; ; i++ {
		err := writable(seg, rwName, method)
		if err == nil {
			err = ctx.Err()
			if err != nil {
				err = ctxErr(seg, rwName, method, p, err)
			}
		}
		if err != nil {
			if claimed {
				// After a takeover, the next locker finds the dead
				// writer again and is told: the report is not lost.
				atomic.CompareAndSwapUint64(&rw.w, me, dead)
				rw.ev.notify()
			}
			return err
		}
		v := atomic.LoadUint64(&rw.w)
		switch {
		case claimed:
			if !rw.readers() {
				return died
			}
		case v == 0:
			if atomic.CompareAndSwapUint64(&rw.w, 0, me) {
				claimed = true
				continue
			}
		case check && !seg.OwnerAlive(v):
			if atomic.CompareAndSwapUint64(&rw.w, v, me) {
				claimed, dead = true, v
				died = takeOver(seg, rwName, method, p, v)
				continue
			}
		}
		if check {
			check = false
			if claimed && rw.sweepReaders(seg) {
				continue
			}
		}
		if !spin(i) {
			continue
		}
		ev := rw.ev.mark()
		if w := atomic.LoadUint64(&rw.w); w == 0 || (claimed && !rw.readers()) {
			continue
		}
		if !futex.Wait(&rw.ev.v, ev, ownerPoll) {
			check = true
		}
	}
}

// Unlock releases rw held for writing. ErrNotHeld says this open does
// not hold it so.
func (rw *RWMutex) Unlock() error {
	p := unsafe.Pointer(rw)
	seg := segFor(p, rwName, "Unlock")
	if !seg.CanChange() {
		if err := writable(seg, rwName, "Unlock"); err != nil {
			return err
		}
	}
	if me := seg.OwnerID(); !atomic.CompareAndSwapUint64(&rw.w, me, 0) {
		return notHeld(seg, rwName, "Unlock", p)
	}
	rw.ev.notify()
	return nil
}
