package mapped

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/closing"
	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// Mode says whether Open creates a segment and how it maps it.
type Mode uint8

const (
	// CreateOnly creates a new segment; ErrExists if one is there.
	CreateOnly Mode = iota
	// OpenOnly opens an existing segment; ErrNotFound if there is none.
	OpenOnly
	// OpenOrCreate opens the segment, creating it if there is none.
	OpenOrCreate
	// OpenReadOnly maps an existing segment read-only; writes are ErrReadOnly.
	OpenReadOnly
	// OpenCopyOnWrite maps an existing segment privately: writes are seen
	// only by this process and never reach the backing.
	OpenCopyOnWrite
)

func (m Mode) String() string {
	switch m {
	case CreateOnly:
		return "CreateOnly"
	case OpenOnly:
		return "OpenOnly"
	case OpenOrCreate:
		return "OpenOrCreate"
	case OpenReadOnly:
		return "OpenReadOnly"
	case OpenCopyOnWrite:
		return "OpenCopyOnWrite"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Segment is an open managed segment. Every method is safe for concurrent
// use by goroutines and, through the segment itself, by processes.
type Segment struct {
	b     backing.Backing
	env   *envelope.Envelope
	mode  Mode
	state atomic.Uint32 // stClosed, stCorrupt (ops.go)
	h     *heap
	lk    segLock
	tag   uint64 // handle tag, from the creation UUID

	repMu  sync.Mutex
	report *recovery.Report

	closeOnce sync.Once
	closeErr  error

	whyCorrupt atomic.Pointer[string] // what the operation that found the segment corrupt said
	deadLock   atomic.Uint64          // a read-only open: the lock word last found held by a dead process

	base         uintptr       // the mapping's address (SegmentAt)
	span         uintptr       // its length: the maximum size (SegmentAt)
	known        atomic.Uint64 // the size this process last saw (it only grows): Holds
	lo           uint64        // the manager area's end: the first offset a block may have (Holds)
	laneMe       uint64        // lane owner word of this open (lanes.go)
	laneHint     atomic.Uint32 // the lane this process claimed last
	lanesLeft    atomic.Uint32 // lanes an Abort that failed left to recovery: Close does not wait for them
	lanesChecked atomic.Int64  // when a claim last looked for dead processes' lanes (unix ns)

	mags     []atomic.Pointer[magazine] // per P: this open's block caches (cache.go); nil: none
	magStop  atomic.Uint32              // nonzero: goroutines keep off the caches
	magMade  atomic.Bool                // a magazine was made (Close stops the caches)
	noCaches bool                       // opened withoutCaches

	prefault prefaulter // Prefault's goroutine and its ranges
	// freshEnd is the furthest end of pages this open took from the page
	// heap, freshAhead how far past it the prefaulter was asked to go
	// (freshPages).
	freshEnd, freshAhead atomic.Uint64
}

// Open opens the segment in b as mode says.
//
// A writable open attaches to the segment: it takes a seat in the
// segment's attached-process table, kept alive by a lock the kernel drops
// when the process dies. If the segment was left attached by processes that
// are gone, Open recovers it first; RecoveryReport says what it found.
func Open(b backing.Backing, mode Mode, opts ...Option) (*Segment, error) {
	o, err := buildOptions(b.Name(), opts)
	if err != nil {
		return nil, err
	}
	p := envelope.Params{Size: o.size, MaxSize: o.maxSize, Init: initManager, Check: checkManager, Recover: recoverManager, Claimed: seatClaimed}
	if o.fixed {
		p.Flags |= envelope.FlagFixedSize
	}
	var env *envelope.Envelope
	var rep *recovery.Report
	switch mode {
	case CreateOnly:
		env, rep, err = openEnvelope(b, region.Create, o, p)
	case OpenOnly:
		env, rep, err = openEnvelope(b, 0, o, p)
	case OpenOrCreate:
		env, rep, err = openOrCreate(b, o, p)
	case OpenReadOnly:
		p.Access = envelope.ReadOnly
		env, rep, err = openEnvelope(b, region.ReadOnly, o, p)
	case OpenCopyOnWrite:
		p.Access = envelope.CopyOnWrite
		env, rep, err = openEnvelope(b, region.ReadOnly, o, p)
	default:
		return nil, fmt.Errorf("mapstore: open %s: unknown mode %d", b.Name(), mode)
	}
	if err != nil {
		return nil, fmt.Errorf("mapstore: open: %w", err)
	}
	s := &Segment{b: b, env: env, mode: mode, report: rep, noCaches: o.noCaches}
	err = s.attachManager()
	if err == nil {
		s.enableCaches()
	}
	if err == nil && mode != OpenReadOnly {
		// Operations of dead processes outside the segment lock.
		err = s.recoverLanes()
	}
	if err != nil {
		_ = env.Close(envelope.Closing{})
		_ = env.Unmap()
		return nil, fmt.Errorf("mapstore: open: %w", err)
	}
	s.base, s.span = uintptr(s.h.base), uintptr(env.MaxSize())
	s.known.Store(uint64(env.Size()))
	register(s)
	return s, nil
}

// openEnvelope opens b as flags say and the envelope in it.
func openEnvelope(b backing.Backing, flags region.Flags, o options, p envelope.Params) (*envelope.Envelope, *recovery.Report, error) {
	r, err := b.Open(flags, o.perm)
	if err != nil {
		return nil, nil, err
	}
	return envelope.Open(r, p)
}

// openOrCreate opens the segment in b, or creates it if there is none. A
// creation that finds another process's segment published first opens
// that one.
func openOrCreate(b backing.Backing, o options, p envelope.Params) (*envelope.Envelope, *recovery.Report, error) {
	for try := 0; ; try++ {
		env, rep, err := openEnvelope(b, 0, o, p)
		if !errors.Is(err, ErrNotFound) {
			return env, rep, err
		}
		env, rep, err = openEnvelope(b, region.Create, o, p)
		if !errors.Is(err, ErrExists) {
			return env, rep, err
		}
		if try == 3 {
			// Something is at the path, and opening it finds nothing.
			return nil, nil, fmt.Errorf("%s: exists, yet opening it finds no file (a symbolic link to a missing file?): %w", b.Name(), ErrNotFound)
		}
	}
}

// Close detaches from the segment and unmaps it. The last writable
// process to close a segment marked in use (changed since it was last
// closed cleanly: see Durability in the package documentation) flushes
// it, on a file, and marks it closed; closing a segment nobody changed
// writes nothing but this open's seat, and syncs nothing.
// Close is idempotent: a second call returns nil once the first is done;
// afterwards every other method returns ErrClosed.
//
// Calls in flight in other goroutines are not cut off: Close waits for
// every one that holds the segment lock (a change, or a read of the
// allocator's structures) to end, and those that come later fail with
// ErrClosed. Lock-free lookups still running see the segment's memory
// replaced by zeros (they never fault) and say ErrClosed too. Pointers
// and slices into the segment are dangling once Close returns, a Ptr's
// target included: reading one yields zeros, writing one changes only
// this process's memory, and the address range is unmapped once the
// Segment is garbage.
func (s *Segment) Close() error {
	first := false
	s.closeOnce.Do(func() { first, s.closeErr = true, s.close() })
	if first {
		return s.closeErr
	}
	return nil // a later Close returns once the first is done
}

// laneDrain bounds how long Close waits for this process's lanes to end.
const laneDrain = time.Second

func (s *Segment) close() error {
	s.state.Or(stClosed)
	unregister(s)
	closing.Closed(s)
	stopped := s.magMade.Load()
	if stopped {
		// Goroutines pinned in a cache operation that began before the
		// state changed end it first (the caches are emptied below).
		s.stopCaches()
	}
	// Lanes this process claimed finish (they go on while the segment
	// is closing); no new one is claimed (BeginLane backs out of a claim
	// that raced with the state). A lane never ended (a caller that
	// panicked between BeginLane and Commit without an Abort) is not
	// waited for past laneDrain: it is left to recovery, as a dead
	// process's lane, once this open is gone.
	start := time.Now()
	for k := 0; s.mode != OpenReadOnly && s.lanesInFlight() && time.Since(start) < laneDrain; k++ {
		if k < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	var c envelope.Closing
	switch s.mode {
	case OpenReadOnly:
		// Holds nothing in the segment.
	case OpenCopyOnWrite:
		s.lk.lockForClose()
		c.Release = func([]byte, bool) { s.lk.unlock() }
	default:
		// Every call holding the lock has ended; until the mapping is
		// retired, no goroutine of this process can take it again (see
		// releaseForClose).
		s.lk.lockForClose()
		if !stopped && s.magMade.Load() {
			// A magazine made (under the lock) after the look above: a
			// goroutine that saw the state before Close set it may be
			// pinned on it. magMade stands still now that Close holds
			// the lock.
			s.stopCaches()
		}
		s.finishPending()
		s.closeCaches()
		c.Keep = mgrEnd
		c.Release = func(mem []byte, last bool) {
			s.lk.releaseForClose((*uint64)(unsafe.Pointer(&mem[mLock])), last)
		}
		c.Quiet = s.quietAtClose
	}
	err := s.env.Close(c)
	if s.mode != OpenReadOnly {
		s.lk.unlockForClose()
	}
	runtime.AddCleanup(s, func(e *envelope.Envelope) { _ = e.Unmap() }, s.env)
	if err != nil {
		return fmt.Errorf("mapstore: close %s: %w", s.b.Name(), err)
	}
	return nil
}

// finishPending rolls back an operation of this process that was left
// half done (none is: every operation ends or rolls back, a panic
// included), with the lock held, before Close detaches.
func (s *Segment) finishPending() {
	if op, _, err := s.h.j.Pending(); op != 0 || err != nil || s.h.fastPending() {
		s.repMu.Lock()
		defer s.repMu.Unlock()
		if err := s.h.rollBack(s.env.Size(), "this process, found at Close", s.report.Addf); err != nil {
			s.report.Addf("could not roll back an operation found at Close: %v", err)
		}
	}
}

// quietAtClose is envelope.Closing.Quiet for the last attached open: the
// segment's first pages, head, read from the backing once the mapping is
// retired. A goroutine of this process still running a call may have
// taken the segment lock (releaseForClose with last) or claimed a lane
// (BeginLane, which backs out when it sees the state) just before the
// retire and released it just after, into private memory: the word then
// names this open, and nothing was done under it. Such words are cleared
// (put writes them back); a lane that an Abort left to recovery
// (lanesLeft), or that holds entries (a call cut short, never ended), is
// not theirs, and stays: the segment is then not marked closed, and the
// next Open recovers it. Then quiet.
func (s *Segment) quietAtClose(head []byte, put func(off int) error) error {
	base := unsafe.Pointer(unsafe.SliceData(head))
	w := func(off uintptr) *uint64 { return (*uint64)(unsafe.Add(base, off)) }
	if v := *w(mLock); v&lockOwnerMask == s.lk.me {
		*w(mLock) = v &^ (lockOwnerMask | lockWaiters)
		if err := put(mLock); err != nil {
			return err
		}
	}
	g := geometryOf(*w(mGeometry))
	for i := range g.nLanes {
		off := mLaneOwners + uintptr(i)*8
		// Only a claim that recorded nothing: a lane with entries is an
		// operation cut short (its caller never ended it), left to
		// recovery like a dead process's.
		if *w(off) == s.laneMe && s.lanesLeft.Load()&(1<<i) == 0 && *w(g.lanes + uintptr(i)*laneBytes) == 0 {
			*w(off) = 0
			if err := put(int(off)); err != nil {
				return err
			}
		}
	}
	return quiet(head)
}

// quiet: nothing is half done in the segment
// whose first pages are mem (the segment lock is free, the journal idle,
// the fast-path intent record clear).
func quiet(mem []byte) error { return quietCheck(mem, true) }

// quietExceptLock is quiet for a segment whose lock may be left held by a
// process that changed nothing under it.
func quietExceptLock(mem []byte) error { return quietCheck(mem, false) }

func quietCheck(mem []byte, lock bool) error {
	base := unsafe.Pointer(unsafe.SliceData(mem))
	w := func(off uintptr) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(base, off))) }
	g := geometryOf(w(mGeometry))
	j := journal.At(base, g.journal, g.journalLen)
	switch op, _, err := j.Pending(); {
	case err != nil:
		return err
	case lock && w(mLock)&(lockOwnerMask|lockWaiters) != 0:
		return fmt.Errorf("the segment lock is held (word %#x)", w(mLock))
	case op != 0:
		return fmt.Errorf("the undo journal holds operation %d", op)
	case w(mFast) != 0:
		return fmt.Errorf("the fast-path intent record is set (%#x)", w(mFast))
	}
	for i := range maxLanes {
		if v := w(mLaneOwners + uintptr(i)*8); v != 0 {
			return fmt.Errorf("lane %d is claimed (owner word %#x)", i, v)
		}
	}
	if g == &geometries[0] {
		for seat := range envelope.MaxSeats {
			if v := w(mCaches + uintptr(8*seat)); v != 0 {
				return fmt.Errorf("seat %d has block caches (at offset %d)", seat, v)
			}
		}
	}
	return nil
}

// Flush makes everything written to the segment so far durable: msync of
// the used range and fdatasync. In a writable open it first marks the
// segment in use, durably, if it is not yet (see Durability in the
// package documentation), so that what is written through pointers after
// it is covered by power-loss detection too. On shared memory, which has
// no disk behind it, it syncs nothing.
func (s *Segment) Flush() error {
	if st := s.state.Load(); st&stClosed != 0 {
		return s.errClosed("flush")
	}
	if err := s.env.Flush(); err != nil {
		return s.errf("flush", err)
	}
	return nil
}

// Size is the segment's current size in bytes.
func (s *Segment) Size() int64 {
	if s.state.Load()&stClosed != 0 {
		return 0
	}
	return s.env.Size()
}

// MaxSize is the most the segment can grow to: the address space mapped.
func (s *Segment) MaxSize() int64 {
	if s.state.Load()&stClosed != 0 {
		return 0
	}
	return s.env.MaxSize()
}

// Grow grows the segment by extra bytes (rounded up to a page) in place:
// every attached process sees the new memory at once and the base address
// does not move. It fails with ErrNoSpace past the maximum size or when the
// disk or tmpfs is full, with ErrReadOnly unless the segment is writable.
func (s *Segment) Grow(extra int64) error {
	if extra <= 0 {
		return fmt.Errorf("mapstore: grow %s by %d bytes: %w", s.b.Name(), extra, ErrInvalidSize)
	}
	// The size is read under the lock: two Grows at once grow twice.
	err := s.journaled("grow", opGrow, func() error {
		cur := s.env.Size()
		if extra > s.env.MaxSize()-cur && s.env.Access() == envelope.ReadWrite {
			return fmt.Errorf("past the maximum size %d: %w", s.env.MaxSize(), ErrNoSpace)
		}
		got, err := s.env.Grow(cur + extra)
		if err != nil {
			return err
		}
		s.h.incorporate(uint64(got) >> pageShift)
		return nil
	})
	if err != nil && !errors.Is(err, ErrClosed) && !strings.HasPrefix(err.Error(), "mapstore:") {
		return s.errf(fmt.Sprintf("grow by %d bytes", extra), err)
	}
	return err
}

// Name is the backing's name: the file's path, or "shm:NAME".
func (s *Segment) Name() string { return s.b.Name() }

// Mode is the mode the segment was opened with.
func (s *Segment) Mode() Mode { return s.mode }

// RecoveryReport says what Open found and did: whether the segment was
// created, whether it had been left attached by processes that died (and
// what was rolled back), whether a header copy was damaged.
//
// Recoveries that happen later, when this process takes the segment lock
// over from a process that died holding it, are added to its Actions; the
// report returned is a copy.
func (s *Segment) RecoveryReport() *recovery.Report {
	s.repMu.Lock()
	defer s.repMu.Unlock()
	r := *s.report
	r.Actions = append([]string(nil), r.Actions...)
	return &r
}

// Info describes a segment.
type Info struct {
	Name       string         // backing name
	Mode       Mode           // how this process opened it
	Size       int64          // current size in bytes
	MaxSize    int64          // maximum size in bytes
	State      recovery.State // header state now (attached from the first change until the last writer closes)
	Opens      uint64         // writable opens over the segment's life
	Generation uint64         // header generation
	UUID       [16]byte       // creation UUID
	FixedSize  bool           // allocations do not grow it
	Durable    bool           // Flush reaches a disk (file backing)
	// LockAcquisitions counts the times any process took the segment
	// lock over the segment's life (modulo 2^56): how often operations
	// serialised. Container calls that publish with one store, and lanes,
	// do not take it.
	LockAcquisitions uint64
}

// Info reads the segment's header.
func (s *Segment) Info() (Info, error) {
	if st := s.state.Load(); st&stClosed != 0 {
		return Info{}, s.errClosed("info")
	}
	h, err := s.env.Header()
	if err != nil {
		return Info{}, s.errf("info", err)
	}
	return Info{
		Name: s.b.Name(), Mode: s.mode, Size: s.env.Size(), MaxSize: s.env.MaxSize(),
		State: h.State, Opens: s.env.Opens(), Generation: h.Generation, UUID: h.UUID,
		FixedSize: h.Flags&envelope.FlagFixedSize != 0, Durable: s.env.Durable(),
		LockAcquisitions: atomic.LoadUint64(s.lk.word) >> 8,
	}, nil
}
