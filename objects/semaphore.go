package objects

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/mapped"
)

// Semaphore is a counting semaphore that lives in a segment, shared by
// the goroutines of every process that maps it. Its zero value has no
// units; give it some with Release (or Init, before anyone uses it).
//
// Units held by a process that dies: Boost's interprocess_semaphore
// loses them silently. A Semaphore records, per process, the units it
// acquired less those it released (in semHolders slots; a process that
// finds them all taken goes unrecorded, and a dead holder's slot is
// reused only once Orphaned has cleared it), and Orphaned
// finds the processes that died holding units, clears their records and
// reports how many units they held. It does not give them back, since a
// unit may stand for something the dead process used up (a semaphore
// used to signal, where one process releases and another acquires, has
// nothing to give back): call Release with the count if the units stand
// for a resource that is free again. A process killed inside Acquire or
// Release may leave its record off by that call's units.
//
// Waiters sleep on a futex, waking at least every 20 ms to look at their
// context.
//
// Layout (8 + 16*semHolders bytes): the units available (futex); the
// number of sleepers (a sleeper that died leaves it one too high: some
// releases cost a system call for nothing); then per holder slot the
// OwnerID of a process and the units it holds (acquired less released).
type Semaphore struct {
	n        uint32
	sleepers uint32
	holders  [semHolders]struct {
		id    uint64
		units int64
	}
}

const (
	semHolders = 8
	semName    = "Semaphore"
	semReaping = 0x80 // a holder slot's id while a process reaps it: its OwnerID | semReaping
)

// Init sets the units available to n, for a semaphore nobody uses yet.
// In a segment opened read-only it is mapped.ErrReadOnly.
func (s *Semaphore) Init(n uint32) error {
	seg := segFor(unsafe.Pointer(s), semName, "Init")
	if err := writable(seg, semName, "Init"); err != nil {
		return err
	}
	atomic.StoreUint32(&s.n, n)
	return nil
}

// Available is the number of units available now.
func (s *Semaphore) Available() int {
	segFor(unsafe.Pointer(s), semName, "Available")
	return int(atomic.LoadUint32(&s.n))
}

// Acquire takes one unit, waiting while there is none.
func (s *Semaphore) Acquire() error { return s.acquire(context.Background(), "Acquire", true) }

// AcquireContext is Acquire that gives up when ctx ends.
func (s *Semaphore) AcquireContext(ctx context.Context) error {
	return s.acquire(ctx, "AcquireContext", true)
}

// TryAcquire takes a unit if one is available, and reports whether it
// did.
func (s *Semaphore) TryAcquire() (bool, error) {
	err := s.acquire(context.Background(), "TryAcquire", false)
	if err == errWouldWait {
		return false, nil
	}
	return err == nil, err
}

var errWouldWait = fmt.Errorf("would wait")

func (s *Semaphore) acquire(ctx context.Context, method string, wait bool) error {
	p := unsafe.Pointer(s)
	seg := segFor(p, semName, method)
	if err := writable(seg, semName, method); err != nil {
		return err
	}
	me := seg.OwnerID()
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for i := 0; ; i++ {
		v := atomic.LoadUint32(&s.n)
		if v > 0 {
			if atomic.CompareAndSwapUint32(&s.n, v, v-1) {
				s.account(me, 1)
				return nil
			}
			continue
		}
		if !wait {
			return errWouldWait
		}
		if err := ctx.Err(); err != nil {
			return ctxErr(seg, semName, method, p, err)
		}
		if err := writable(seg, semName, method); err != nil {
			return err
		}
		if !spin(i) {
			continue
		}
		if stop == nil {
			stop = wakeOnDone(ctx, &s.n)
		}
		atomic.AddUint32(&s.sleepers, 1)
		futex.Wait(&s.n, 0, ownerPoll)
		atomic.AddUint32(&s.sleepers, ^uint32(0))
	}
}

// Release gives n units back (n >= 1), waking waiters.
func (s *Semaphore) Release(n int) error {
	p := unsafe.Pointer(s)
	seg := segFor(p, semName, "Release")
	if err := writable(seg, semName, "Release"); err != nil {
		return err
	}
	if n < 1 || n > 1<<31-1 {
		return fmt.Errorf("mapstore: objects.Semaphore.Release at offset %d in %s: %d units: %w", offOf(seg, p), seg.Name(), n, mapped.ErrInvalidSize)
	}
	for {
		v := atomic.LoadUint32(&s.n)
		if uint64(v)+uint64(n) > 1<<32-1 {
			return fmt.Errorf("mapstore: objects.Semaphore.Release at offset %d in %s: %d units on top of %d overflow the count: %w", offOf(seg, p), seg.Name(), n, v, mapped.ErrInvalidSize)
		}
		if atomic.CompareAndSwapUint32(&s.n, v, v+uint32(n)) {
			break
		}
	}
	s.account(seg.OwnerID(), -int64(n))
	if atomic.LoadUint32(&s.sleepers) != 0 {
		futex.Wake(&s.n, n)
	}
	return nil
}

// account adds d to the units held by me, in its holder slot (claiming
// one if it has none and one is free).
func (s *Semaphore) account(me uint64, d int64) {
	free := -1
	for k := range s.holders {
		h := &s.holders[k]
		switch atomic.LoadUint64(&h.id) {
		case me:
			atomic.AddInt64(&h.units, d)
			return
		case 0:
			if free < 0 {
				free = k
			}
		}
	}
	for k := free; k >= 0 && k < semHolders; k++ {
		h := &s.holders[k]
		if atomic.CompareAndSwapUint64(&h.id, 0, me) {
			atomic.AddInt64(&h.units, d)
			return
		}
	}
}

// Orphaned finds the processes that died holding units of s (acquired
// more than they released), clears their records and returns how many
// units they held, in all. The units are not released: see Semaphore.
func (s *Semaphore) Orphaned() (int, error) {
	p := unsafe.Pointer(s)
	seg := segFor(p, semName, "Orphaned")
	if err := writable(seg, semName, "Orphaned"); err != nil {
		return 0, err
	}
	me := seg.OwnerID()
	total := int64(0)
	for k := range s.holders {
		h := &s.holders[k]
		id := atomic.LoadUint64(&h.id)
		if id == 0 || seg.OwnerAlive(id&^semReaping) || !atomic.CompareAndSwapUint64(&h.id, id, me|semReaping) {
			continue
		}
		// The slot is ours to clear: a reaper that died half way is
		// reaped again.
		if u := atomic.LoadInt64(&h.units); u > 0 {
			total += u
		}
		atomic.StoreInt64(&h.units, 0)
		atomic.StoreUint64(&h.id, 0)
	}
	return int(total), nil
}
