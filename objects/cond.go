package objects

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/mapped"
)

// Cond is a condition variable that lives in a segment, for goroutines of
// every process that maps it to wait for a change made under a Mutex.
// L points to that Mutex, in the same segment; set it once, when the
// value holding both is built:
//
//	type Shared struct {
//	    Mu    objects.Mutex
//	    Ready objects.Cond
//	    Jobs  int64
//	}
//	sh, err := objects.Construct(seg, "shared", Shared{})
//	sh.Ready.L.Set(&sh.Mu)
//
//	// a consumer, in any process           // a producer
//	err = sh.Mu.Lock()                      err = sh.Mu.Lock()
//	for sh.Jobs == 0 && err == nil {        sh.Jobs++
//	    err = sh.Ready.Wait()               sh.Ready.Signal()
//	}                                       err = sh.Mu.Unlock()
//
// Wait unlocks L, sleeps until Signal or Broadcast, and locks L again
// before it returns; a wake-up sent after Wait unlocked L is never lost
// (the waiter reads the sequence word before it unlocks, and sleeps only
// while it has not changed). A Signal may wake more than one waiter (an
// older one sees the new sequence at its next 20 ms poll), and as with
// any condition variable the condition must be looked at again. When L's
// holder died, Wait returns ErrOwnerDied with L locked (see Mutex).
// Signal and Broadcast may be called with or without L held; with
// nobody waiting they cost a few atomic instructions.
//
// Each goroutine waiting holds an OS thread (it sleeps in FUTEX_WAIT).
//
// Layout (16 bytes): the Mutex's offset (L); a sequence word (futex)
// every Signal and Broadcast bumps; the number of waiters (a waiter that
// died leaves it one too high: some wake-ups cost a system call for
// nothing).
type Cond struct {
	L       Ptr[Mutex]
	seq     uint32
	waiters uint32
}

const condName = "Cond"

// mutex is the Mutex L points to, checked against the segment.
func (c *Cond) mutex(seg *mapped.Segment, method string) (*Mutex, error) {
	off := uint64(c.L.Offset())
	if off == 0 {
		panic(fmt.Sprintf("mapstore: objects.Cond.%s at %p: L is nil; set it to the Mutex that guards the condition (c.L.Set(&m))", method, c))
	}
	if off%8 != 0 || !seg.Holds(off, 8) {
		return nil, damaged(seg, condName, unsafe.Pointer(c), "L holds offset %d, not a Mutex inside the segment", off)
	}
	return at[Mutex](seg, off), nil
}

// Wait unlocks L, waits for Signal or Broadcast, and locks L again.
func (c *Cond) Wait() error { return c.wait(context.Background(), "Wait") }

// WaitContext is Wait that gives up when ctx ends; it locks L again
// before it returns either way (the error is then ctx's, wrapped).
func (c *Cond) WaitContext(ctx context.Context) error { return c.wait(ctx, "WaitContext") }

func (c *Cond) wait(ctx context.Context, method string) error {
	p := unsafe.Pointer(c)
	seg := segFor(p, condName, method)
	if err := writable(seg, condName, method); err != nil {
		return err
	}
	m, err := c.mutex(seg, method)
	if err != nil {
		return err
	}
	atomic.AddUint32(&c.waiters, 1)
	s := atomic.LoadUint32(&c.seq)
	if err := m.Unlock(); err != nil {
		atomic.AddUint32(&c.waiters, ^uint32(0))
		return err
	}
	stop := wakeOnDone(ctx, &c.seq)
	var cerr error
	for atomic.LoadUint32(&c.seq) == s {
		if err := ctx.Err(); err != nil {
			cerr = ctxErr(seg, condName, method, p, err)
			break
		}
		if !seg.CanChange() {
			break // closing: Lock says so
		}
		futex.Wait(&c.seq, s, ownerPoll)
	}
	stop()
	atomic.AddUint32(&c.waiters, ^uint32(0))
	// L again, through the segment this call holds: once Close has begun,
	// the segment is no longer found by address (Mutex.Lock would take
	// that for misuse), and the lock reports ErrClosed.
	if !seg.CanChange() || !m.lockFast(seg) {
		if err := m.lockSlow(context.Background(), seg, "Lock"); err != nil {
			return err
		}
	}
	return cerr
}

// Signal wakes one goroutine waiting on c, if there is one.
func (c *Cond) Signal() { c.bump("Signal", 1) }

// Broadcast wakes every goroutine waiting on c.
func (c *Cond) Broadcast() { c.bump("Broadcast", 1<<31-1) }

func (c *Cond) bump(method string, n int) {
	seg := segFor(unsafe.Pointer(c), condName, method)
	if writable(seg, condName, method) != nil {
		return // read-only or closing: nobody can wait here
	}
	atomic.AddUint32(&c.seq, 1)
	if atomic.LoadUint32(&c.waiters) != 0 {
		futex.Wake(&c.seq, n)
	}
}
