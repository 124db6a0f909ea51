package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// OFD lock bytes, far beyond any data.
const (
	LockBase    = int64(1) << 60
	metaLockOff = LockBase       // serialises opens, closes, growth, header writes
	seatLockOff = LockBase + 256 // + seat index: liveness of an attached process
)

// Access says how an envelope maps its segment.
type Access uint8

const (
	// ReadWrite maps shared and writable, and attaches to the segment.
	ReadWrite Access = iota
	// ReadOnly maps shared and read-only; it does not attach.
	ReadOnly
	// CopyOnWrite maps privately: writes never reach the backing.
	CopyOnWrite
)

// Params say how Open treats a segment.
type Params struct {
	Access Access
	// Create allows a new segment to be made when the backing is new or
	// empty, or holds an interrupted creation.
	Create bool
	// Exclusive makes an existing segment ErrExists (with Create).
	Exclusive bool
	// Size and MaxSize are a new segment's size and maximum size, page
	// multiples with EnvelopeSize <= Size <= MaxSize <= MaxMaxSize.
	Size, MaxSize int64
	// Flags are a new segment's header flags.
	Flags uint32
	// Init lays out the layers above in a new segment. It runs under the
	// meta lock, before any other process can open the segment.
	Init func(e *Envelope) error
	// Check, if set, verifies the layers above in an existing segment
	// after it is mapped and before the open changes anything, so that a
	// segment of a format they cannot read is refused with the backing
	// left exactly as it was. Its error fails the open.
	Check func(e *Envelope, h Header) error
	// Recover repairs the layers above after processes died with the
	// segment attached (rep says which, and whether any is still alive),
	// under the meta lock. Its error fails the open.
	Recover func(e *Envelope, rep *recovery.Report) error
	// Claimed, if set, runs under the meta lock once this open has taken
	// seat in the attached-process table, before anything else can use
	// it: the layers above clear what an earlier occupant left naming
	// the seat. Its error fails the open.
	Claimed func(e *Envelope, seat int, rep *recovery.Report) error
	// OpenWait bounds how long an open waits for a creator that has made
	// the backing but not yet locked it; 0 means a short default.
	OpenWait time.Duration
}

// Envelope is an open segment's envelope: its mapping, header and
// seat in the attached-process table. Its methods are safe for concurrent use.
type Envelope struct {
	region *region.Region
	mem    view // the whole mapping (maximum size; private size for copy-on-write)
	access Access
	seat   int // seat in the attached-process table, or -1
	maxLen int64
	// fixedSize, when not 0, is the size whatever the live-size word says:
	// a copy-on-write open's private copy, or a read-only open of a
	// segment whose word disagrees with the header.
	fixedSize int64
	uuid      [16]byte
	flags     uint32

	mu     sync.Mutex // in front of the meta OFD lock, which is per descriptor; Close holds it
	closed atomic.Bool
}

// Open validates (or creates) the segment in r, maps it, attaches to it
// when writable, and runs recovery when it was left dirty. On error, r is
// closed.
func Open(r *region.Region, p Params) (e *Envelope, rep *recovery.Report, err error) {
	if os.Getpagesize() != PageSize {
		_ = r.Close()
		return nil, nil, fmt.Errorf("%s: system page size %d, mapstore needs %d: %w", r.Name(), os.Getpagesize(), PageSize, recovery.ErrVersion)
	}
	e = &Envelope{region: r, access: p.Access, seat: -1}
	rep = &recovery.Report{Name: r.Name()}
	defer func() {
		if err != nil {
			_ = r.Close()
			e, rep = nil, nil
		}
	}()
	wait := p.OpenWait
	if wait <= 0 {
		wait = 200 * time.Millisecond
	}
	deadline := time.Now().Add(wait)
	for {
		if err := e.lockMeta(); err != nil {
			return nil, nil, err
		}
		retry, err := e.open(p, rep)
		e.unlockMeta()
		if err != nil {
			return nil, nil, err
		}
		if !retry {
			return e, rep, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%s: empty file, not a mapstore segment: %w", r.Name(), recovery.ErrCorrupt)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// open does the work of Open under the meta lock. retry asks the caller
// to wait and try again: the backing is empty and may be a creation that
// has not yet taken the lock.
func (e *Envelope) open(p Params, rep *recovery.Report) (retry bool, err error) {
	r := e.region
	size, err := r.Size()
	if err != nil {
		return false, err
	}
	if size == 0 {
		if !p.Create || p.Access != ReadWrite {
			return true, nil
		}
		rep.Created = true
		rep.TookOver = !r.Created()
		return false, e.create(p, rep)
	}
	if size < PageSize {
		return false, fmt.Errorf("%s: %d bytes, shorter than a segment header: %w", r.Name(), size, recovery.ErrCorrupt)
	}
	page := make([]byte, PageSize)
	if _, err := r.ReadAt(page, 0); err != nil {
		return false, err
	}
	h, damaged, err := ReadHeaders(page)
	if err != nil {
		return false, fmt.Errorf("%s: %w", r.Name(), err)
	}
	rep.State = h.State
	if h.State == recovery.StateCreating {
		// The creator holds the meta lock until creation ends, and we hold
		// it now: the creator died.
		if !p.Create || p.Access != ReadWrite {
			return false, fmt.Errorf("%s: its creation was interrupted: %w", r.Name(), region.ErrNotFound)
		}
		rep.Created, rep.TookOver = true, true
		return false, e.create(p, rep)
	}
	if p.Exclusive {
		return false, fmt.Errorf("%s: %w", r.Name(), region.ErrExists)
	}
	if uint64(size) < h.Size {
		return false, fmt.Errorf("%s: header says %d bytes, the backing has %d: %w", r.Name(), h.Size, size, recovery.ErrCorrupt)
	}
	rep.DamagedHeaders = damaged
	e.uuid, e.flags = h.UUID, h.Flags
	mapLen, mode := int64(h.MaxSize), region.MapShared
	switch p.Access {
	case ReadOnly:
		mode = region.MapReadOnly
	case CopyOnWrite:
		mapLen, mode = int64(h.Size), region.MapPrivate
	}
	if e.mem, err = r.Map(mapLen, mode); err != nil {
		return false, err
	}
	e.maxLen = mapLen
	if p.Access == CopyOnWrite {
		e.fixedSize = mapLen
	}
	live, err := e.survey(h, rep)
	if err != nil {
		return false, err
	}
	if err := e.checkLiveSize(h, live, rep); err != nil {
		return false, err
	}
	if p.Access == CopyOnWrite {
		// A snapshot: no writer may be attached, and none can attach while
		// this open holds the meta lock; every page is copied before it
		// lets go, so that no later write through the file shows through.
		if live > 0 {
			return false, fmt.Errorf("%s: a copy-on-write open is a snapshot, and %d writable opens are attached: %w", r.Name(), live, ErrBusy)
		}
		if err := r.Populate(e.mem); err != nil {
			return false, err
		}
	}
	if p.Check != nil {
		if err := p.Check(e, h); err != nil {
			return false, fmt.Errorf("%s: %w", r.Name(), err)
		}
	}
	if p.Access == ReadOnly {
		rep.RecoveryNeeded = rep.UncleanShutdown
		return false, nil
	}
	return false, e.attach(h, damaged, p, rep)
}

// create makes a new segment: header page first (state creating), then
// the full size, then the layers above, then the attached state.
func (e *Envelope) create(p Params, rep *recovery.Report) error {
	r := e.region
	h := Header{
		Version:   FormatVersion,
		ByteOrder: NativeByteOrder(),
		PtrWidth:  uint8(unsafe.Sizeof(uintptr(0))),
		PageSize:  PageSize,
		Flags:     p.Flags,
		Size:      EnvelopeSize,
		MaxSize:   uint64(p.MaxSize),
		State:     recovery.StateCreating,
		BootID:    bootID(),
		DataStart: EnvelopeSize,
	}
	if _, err := rand.Read(h.UUID[:]); err != nil {
		return fmt.Errorf("%s: create: %w", r.Name(), err)
	}
	if err := r.Resize(EnvelopeSize); err != nil {
		return err
	}
	mem, err := r.Map(p.MaxSize, region.MapShared)
	if err != nil {
		return err
	}
	e.mem, e.maxLen, e.uuid, e.flags = mem, p.MaxSize, h.UUID, h.Flags
	clear(mem[:EnvelopeSize])
	h.Generation = 1
	h.Encode(mem[HeaderOffB:])
	if err := r.Resize(p.Size); err != nil {
		return err
	}
	h.Size = uint64(p.Size)
	e.mem.setLiveSize(h.Size)
	e.writeHeader(&h)
	if p.Init != nil {
		if err := p.Init(e); err != nil {
			return fmt.Errorf("%s: create: %w", r.Name(), err)
		}
		if h, err = e.current(); err != nil {
			return err
		}
	}
	if err := e.claimSeat(p, rep); err != nil {
		return err
	}
	h.State = recovery.StateAttached
	h.Opens = 1
	e.writeHeader(&h)
	return nil
}

// survey looks at the attached-process table: which attached processes are
// dead (rep.DeadProcesses), how many are alive, and whether the segment was
// left attached with none alive (rep.UncleanShutdown, and whether by
// another boot of the machine, rep.MachineRestarted).
func (e *Envelope) survey(h Header, rep *recovery.Report) (live int, err error) {
	for i := 0; i < MaxSeats; i++ {
		if i == e.seat || e.mem.seatState(i) == 0 {
			continue
		}
		held, err := e.region.Held(seatLockOff + int64(i))
		if err != nil {
			return 0, err
		}
		if held {
			live++
			continue
		}
		rep.DeadProcesses = append(rep.DeadProcesses, recovery.Process{Seat: i, PID: int(e.mem.seatPID(i))})
	}
	if h.State == recovery.StateAttached && live == 0 {
		rep.UncleanShutdown = true
		rep.MachineRestarted = h.BootID != bootID()
	}
	return live, nil
}

// checkLiveSize checks the live-size word against the header, under the
// meta lock (so no growth is half published): they must agree. Where they
// do not and nobody alive holds the segment, the header (checksummed) is
// the truth, and the word is rewritten from it (a growth may have died
// between ftruncate and publishing); a read-only open cannot, and while
// writers are attached a disagreement is damage.
func (e *Envelope) checkLiveSize(h Header, live int, rep *recovery.Report) error {
	word := e.mem.liveSize()
	if word == h.Size {
		return nil
	}
	if live > 0 {
		return fmt.Errorf("%s: the live-size word says %d bytes, the header %d: %w", e.region.Name(), word, h.Size, recovery.ErrCorrupt)
	}
	if e.access == ReadOnly {
		// Cannot rewrite it: this open keeps to the header's size.
		e.fixedSize = int64(h.Size)
		rep.Addf("the live-size word says %d bytes, the header %d: read with the header's size, and a writable open rewrites the word", word, h.Size)
		return nil
	}
	e.mem.setLiveSize(h.Size)
	rep.Addf("rewrote the live-size word from the header (it said %d bytes, the header %d)", word, h.Size)
	return nil
}

// attach joins a writable segment: reap dead seats (after the layers above
// have recovered), claim a seat, mark the segment attached.
func (e *Envelope) attach(h Header, damaged []string, p Params, rep *recovery.Report) error {
	unclean := rep.UncleanShutdown
	if len(rep.DeadProcesses) > 0 || unclean {
		if p.Recover != nil {
			if err := p.Recover(e, rep); err != nil {
				return fmt.Errorf("%s: recovery: %w", e.region.Name(), err)
			}
		}
		for _, d := range rep.DeadProcesses {
			e.freeSeat(e.mem, d.Seat)
			rep.Addf("released the seat of dead process %d", d.PID)
		}
		var err error
		if h, err = e.current(); err != nil {
			return err
		}
	}
	if p.Access == CopyOnWrite {
		if len(damaged) > 0 || unclean {
			rep.Addf("recovered the private copy only; the backing is unchanged")
		}
		return nil
	}
	if err := e.claimSeat(p, rep); err != nil {
		return err
	}
	wasClosed := h.State == recovery.StateClosed
	h.State = recovery.StateAttached
	h.BootID = bootID()
	h.Opens++
	e.writeHeader(&h)
	if len(damaged) > 0 {
		// The write went to the copy that was not trusted; write once more
		// so that both copies are valid again.
		e.writeHeader(&h)
		rep.Addf("rewrote the damaged header copy")
	}
	if wasClosed {
		// The attached state must be on disk before any data write can be,
		// or a power loss could leave new data under a closed header.
		return e.region.Sync(e.mem[:PageSize])
	}
	return nil
}

// Grow makes the segment newSize bytes (a page multiple, at most the
// maximum size) unless it already is at least that large, and publishes
// the size to every attached process. It returns the size after.
func (e *Envelope) Grow(newSize int64) (int64, error) {
	if e.access != ReadWrite {
		return 0, fmt.Errorf("%s: grow: %w", e.region.Name(), errNotWritable(e.access))
	}
	if err := e.lockMeta(); err != nil {
		return 0, err
	}
	defer e.unlockMeta()
	h, err := e.current()
	if err != nil {
		return 0, err
	}
	if word := e.mem.liveSize(); word != h.Size {
		return int64(h.Size), fmt.Errorf("%s: grow: the live-size word says %d bytes, the header %d: %w", e.region.Name(), word, h.Size, recovery.ErrCorrupt)
	}
	if uint64(newSize) <= h.Size {
		return int64(h.Size), nil
	}
	if newSize%PageSize != 0 {
		newSize += PageSize - newSize%PageSize
	}
	if uint64(newSize) > h.MaxSize {
		return int64(h.Size), fmt.Errorf("%s: grow to %d bytes: past the maximum size %d: %w", e.region.Name(), newSize, h.MaxSize, region.ErrNoSpace)
	}
	if err := e.region.Resize(newSize); err != nil {
		return int64(h.Size), err
	}
	h.Size = uint64(newSize)
	e.writeHeader(&h)
	e.mem.setLiveSize(h.Size)
	return newSize, nil
}

// ErrReadOnly is wrapped by writes refused because the segment was
// opened read-only or copy-on-write.
var ErrReadOnly = errors.New("segment is read-only")

func errNotWritable(a Access) error {
	if a == CopyOnWrite {
		return fmt.Errorf("copy-on-write segments cannot grow: %w", ErrReadOnly)
	}
	return ErrReadOnly
}

// Flush makes everything written so far durable (msync of the used range
// and fdatasync); on shared memory it does nothing.
func (e *Envelope) Flush() error {
	if e.closed.Load() {
		return fmt.Errorf("%s: flush: %w", e.region.Name(), ErrClosed)
	}
	if e.access != ReadWrite {
		return nil
	}
	return e.region.Sync(e.mem[:e.Size()])
}

// Size is the segment's current size in bytes. Every access must stay
// below it: the mapping beyond it has no backing pages.
func (e *Envelope) Size() int64 {
	if e.fixedSize != 0 {
		return e.fixedSize
	}
	return int64(min(e.mem.liveSize(), uint64(e.maxLen)))
}

// MaxSize is the segment's maximum size: the address space mapped.
func (e *Envelope) MaxSize() int64 { return e.maxLen }

// Base is the address of the mapping's first byte.
func (e *Envelope) Base() unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(e.mem)) }

// Mem is the whole mapping. Only Mem()[:Size()] may be touched.
func (e *Envelope) Mem() []byte { return e.mem }

// Name is the backing's name.
func (e *Envelope) Name() string { return e.region.Name() }

// Access is how the envelope was opened.
func (e *Envelope) Access() Access { return e.access }

// Durable reports whether Flush reaches stable storage.
func (e *Envelope) Durable() bool { return e.region.Durable() }

// UUID is the segment's creation UUID.
func (e *Envelope) UUID() [16]byte { return e.uuid }

// Flags are the segment's header flags.
func (e *Envelope) Flags() uint32 { return e.flags }

// Seat is this open's seat in the attached-process table, or -1 when not attached.
func (e *Envelope) Seat() int { return e.seat }

// Header returns the current header.
func (e *Envelope) Header() (Header, error) {
	if err := e.lockMeta(); err != nil {
		return Header{}, err
	}
	defer e.unlockMeta()
	return e.current()
}

// SetRoots changes root offsets under the meta lock and writes the header.
func (e *Envelope) SetRoots(f func(roots *[NumRoots]uint64)) error {
	if e.access == ReadOnly {
		return fmt.Errorf("%s: set roots: %w", e.region.Name(), ErrReadOnly)
	}
	if err := e.lockMeta(); err != nil {
		return err
	}
	defer e.unlockMeta()
	return e.SetRootsLocked(f)
}

// SetRootsLocked is SetRoots for Init and Recover, which run with the meta
// lock already held.
func (e *Envelope) SetRootsLocked(f func(roots *[NumRoots]uint64)) error {
	h, err := e.current()
	if err != nil {
		return err
	}
	f(&h.Roots)
	e.writeHeader(&h)
	return nil
}

// Locked runs f with the meta lock held: no open, close, growth or header
// write of any process runs meanwhile.
func (e *Envelope) Locked(f func() error) error {
	if err := e.lockMeta(); err != nil {
		return err
	}
	defer e.unlockMeta()
	return f()
}

// Roots returns the current root offsets.
func (e *Envelope) Roots() ([NumRoots]uint64, error) {
	h, err := e.Header()
	return h.Roots, err
}

func (e *Envelope) lockMeta() error {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return fmt.Errorf("%s: %w", e.region.Name(), ErrClosed)
	}
	if _, err := e.region.Lock(metaLockOff, e.access == ReadWrite, true); err != nil {
		e.mu.Unlock()
		return err
	}
	return nil
}

func (e *Envelope) unlockMeta() {
	_ = e.region.Unlock(metaLockOff)
	e.mu.Unlock()
}
