package envelope

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
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
	// Size and MaxSize are a new segment's size and maximum size, page
	// multiples with EnvelopeSize <= Size <= MaxSize <= MaxMaxSize. A
	// process that cannot reserve MaxSize bytes of address space makes
	// the segment with a smaller maximum (at least Size), and says so.
	Size, MaxSize int64
	// Flags are a new segment's header flags.
	Flags uint32
	// Init lays out the layers above in a new segment, before any other
	// process can see it.
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
}

// Fatal wraps an error of Params.Check that no open may get past, not
// even a read-only one for inspection (the segment is not one the layers
// above can read at all).
type Fatal struct{ Err error }

func (f *Fatal) Error() string { return f.Err.Error() }
func (f *Fatal) Unwrap() error { return f.Err }

// Envelope is an open segment's envelope: its mapping, header and
// seat in the attached-process table. Its methods are safe for concurrent use.
type Envelope struct {
	region *region.Region
	mem    view // the whole mapping (maximum size; private size for copy-on-write)
	access Access
	seat   int // seat in the attached-process table, or -1
	maxLen int64
	// damage is what Params.Check found wrong with a segment a read-only
	// open opened anyway.
	damage error
	// fixedSize, when not 0, is the size whatever the live-size word says:
	// a copy-on-write open's private copy, or a read-only open of a
	// segment whose word disagrees with the header.
	fixedSize int64
	uuid      [16]byte
	flags     uint32
	// hdr is the header as the open found it (after recovery) or the
	// creation wrote it.
	hdr Header
	// idle: the open found the segment closed cleanly with no seat taken,
	// so no process can be in the middle of anything.
	idle bool
	// inUse: this open has made sure the header says in use (MarkInUse).
	inUse atomic.Bool

	mu     sync.Mutex // in front of the meta OFD lock, which is per descriptor; Close holds it
	closed atomic.Bool
}

// Open validates the segment in r, maps it, attaches to it when writable,
// and runs recovery when it was left dirty; or, when r is a new backing
// (r.Created), builds a segment in it and publishes it. On error, r is
// closed (a new backing is then gone).
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
	if r.Created() {
		rep.Created = true
		return e, rep, e.create(p, rep)
	}
	if err := e.lockMeta(); err != nil {
		return nil, nil, err
	}
	defer e.unlockMeta()
	return e, rep, e.open(p, rep)
}

// open does the work of Open for an existing segment, under the meta lock.
func (e *Envelope) open(p Params, rep *recovery.Report) error {
	r := e.region
	// The size now, under the meta lock: another process may have grown
	// the backing, or (buggy or hostile) shrunk it, since it was opened.
	size, err := r.Size()
	if err != nil {
		return err
	}
	switch {
	// Segments are built elsewhere and linked into place whole, so a
	// file this short was never one; nor is it formatted now.
	case size == 0:
		return fmt.Errorf("%s: empty file (%s), not a mapstore segment, and mapstore formats only files it creates: %w", r.Name(), r.Owner(), recovery.ErrCorrupt)
	case size < PageSize:
		return fmt.Errorf("%s: %d bytes, shorter than a segment header: %w", r.Name(), size, recovery.ErrCorrupt)
	}
	var page [HeaderOffB + HeaderLen]byte // both header copies
	if _, err := r.ReadAt(page[:], 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// Shrunk since the size above was read (a peer that
			// truncates it without the meta lock).
			return fmt.Errorf("%s: shorter than its header: %w (%w)", r.Name(), recovery.ErrCorrupt, err)
		}
		return err
	}
	h, damaged, err := ReadHeaders(page[:])
	if err != nil {
		return fmt.Errorf("%s: %w", r.Name(), err)
	}
	rep.State = h.State
	if h.State == recovery.StateCreating {
		return fmt.Errorf("%s: a creation that never finished (state %s): %w", r.Name(), h.State, recovery.ErrCorrupt)
	}
	if uint64(size) < h.Size {
		return fmt.Errorf("%s: header says %d bytes, the backing has %d: %w", r.Name(), h.Size, size, recovery.ErrCorrupt)
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
		if errors.Is(err, region.ErrNoSpace) {
			return fmt.Errorf("%s: cannot reserve the segment's %d bytes of address space (is it limited, as by ulimit -v?): %w", r.Name(), mapLen, err)
		}
		return err
	}
	e.maxLen = mapLen
	if p.Access == CopyOnWrite {
		e.fixedSize = mapLen
	}
	live, err := e.survey(h, rep)
	if err != nil {
		return err
	}
	if err := e.checkLiveSize(h, live, rep); err != nil {
		return err
	}
	if p.Access == CopyOnWrite {
		// A snapshot: no writer may be attached, and none can attach while
		// this open holds the meta lock; every page is copied before it
		// lets go, so that no later write through the file shows through.
		if live > 0 {
			return fmt.Errorf("%s: a copy-on-write open is a snapshot, and %d writable opens are attached: %w", r.Name(), live, ErrBusy)
		}
		if err := r.Populate(e.mem); err != nil {
			return err
		}
	}
	if p.Check != nil {
		if err := p.Check(e, h); err != nil {
			var f *Fatal
			if p.Access != ReadOnly || errors.Is(err, recovery.ErrVersion) || errors.As(err, &f) {
				return fmt.Errorf("%s: %w", r.Name(), err)
			}
			// A read-only open is for inspection: it opens a damaged
			// segment, says so, and the layers above refuse what the
			// damage makes unsafe (Damage).
			e.damage = fmt.Errorf("%s: %w", r.Name(), err)
			rep.Addf("found the segment damaged: %v", err)
		}
	}
	if p.Access == ReadOnly {
		rep.RecoveryNeeded = rep.UncleanShutdown
		e.hdr = h
		return nil
	}
	return e.attach(h, damaged, p, rep)
}

// survey looks at the attached-process table: which attached processes are
// dead (rep.DeadProcesses), how many are alive, and whether the segment was
// left in use with none alive (rep.UncleanShutdown, and whether by another
// boot of the machine, rep.MachineRestarted). It tests the liveness lock
// of each seat the occupied-seat mask names and that is marked attached.
func (e *Envelope) survey(h Header, rep *recovery.Report) (live int, err error) {
	e.mem.occupied(func(i int) bool {
		if i == e.seat || e.mem.seatState(i) == 0 {
			return true
		}
		var held bool
		if held, err = e.region.Held(seatLockOff + int64(i)); err != nil {
			return false
		}
		if held {
			live++
			return true
		}
		rep.DeadProcesses = append(rep.DeadProcesses, recovery.Process{Seat: i, PID: int(e.mem.seatPID(i))})
		return true
	})
	if err != nil {
		return 0, err
	}
	e.idle = h.State == recovery.StateClosed && live == 0 && len(rep.DeadProcesses) == 0
	if h.State == recovery.StateAttached && live == 0 {
		rep.UncleanShutdown = true
		rep.MachineRestarted = h.BootID != bootID()
	}
	return live, nil
}

// checkLiveSize checks the live-size word against the header, under the
// meta lock (so no growth is half published): they must agree. The
// header (checksummed) is the truth. A word below it was left by a growth
// that died between writing the header and the word (the file has the
// pages): it is rewritten, whoever else is attached. A word above it is
// damage: rewritten when nobody alive holds the segment, ErrCorrupt while
// writers are. A read-only open cannot write: it keeps to the header's
// size, or while writers are attached to the smaller of the two (a
// writer's next growth repairs the word).
func (e *Envelope) checkLiveSize(h Header, live int, rep *recovery.Report) error {
	word := e.mem.liveSize()
	switch {
	case word == h.Size:
		return nil
	case word > h.Size && live > 0:
		return fmt.Errorf("%s: the live-size word says %d bytes, more than the header's %d: %w", e.region.Name(), word, h.Size, recovery.ErrCorrupt)
	case e.access == ReadOnly:
		e.fixedSize = int64(h.Size)
		if live > 0 {
			e.fixedSize = int64(min(word, h.Size))
		}
		rep.Addf("the live-size word says %d bytes, the header %d: read with %d, and a writable open rewrites the word", word, h.Size, e.fixedSize)
		return nil
	}
	e.mem.setLiveSize(h.Size)
	rep.Addf("rewrote the live-size word from the header (it said %d bytes, the header %d)", word, h.Size)
	return nil
}

// attach joins a writable segment: reap dead seats (after the layers above
// have recovered), claim a seat. It does not write the header: a segment
// closed cleanly stays marked closed until the first change (MarkInUse).
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
	e.hdr = h
	if p.Access == CopyOnWrite {
		if len(damaged) > 0 || unclean {
			rep.Addf("recovered the private copy only; the backing is unchanged")
		}
		return nil
	}
	e.mem.clearStaleBits()
	if err := e.claimSeat(p, rep); err != nil {
		return err
	}
	if len(damaged) > 0 {
		// Write the header as it is twice: the first write goes to the
		// copy that was not trusted, the second makes both valid again.
		// Its state does not change, so nothing needs to be durable first.
		e.writeHeader(&h)
		e.writeHeader(&h)
		rep.Addf("rewrote the damaged header copy")
	}
	return nil
}

// MarkInUse makes sure the header says the segment is in use (state
// attached), durably on a file backing, before the caller changes it: a
// segment closed cleanly and opened again stays marked closed until its
// first change, so that an open that only reads, and a process that dies
// before its first change, leave it clean. The first call of an open
// takes the meta lock, and when the header says closed, writes it and
// syncs it (msync of the header page and fdatasync, about 0.3 ms on a
// disk); later calls return at once. Until it returns, nothing the caller
// is about to change may reach the backing.
func (e *Envelope) MarkInUse() error {
	if e.inUse.Load() {
		return nil
	}
	if e.access != ReadWrite {
		return fmt.Errorf("%s: %w", e.region.Name(), errNotWritable(e.access))
	}
	if err := e.lockMeta(); err != nil {
		return err
	}
	defer e.unlockMeta()
	return e.markInUseLocked()
}

// markInUseLocked is MarkInUse with the meta lock held.
func (e *Envelope) markInUseLocked() error {
	if e.inUse.Load() {
		return nil
	}
	h, err := e.current()
	if err != nil {
		return err
	}
	if h.State != recovery.StateAttached {
		h.State = recovery.StateAttached
		h.BootID = bootID()
		h.Opens = e.Opens()
		e.writeHeader(&h)
		// The attached state must be on disk before any data write can
		// be, or a power loss could leave changed data under a closed
		// header.
		if err := e.region.Sync(e.mem[:PageSize]); err != nil {
			return err
		}
	}
	e.inUse.Store(true)
	return nil
}

// Opens is the number of writable opens over the segment's life (the
// attach counter).
func (e *Envelope) Opens() uint64 { return atomic.LoadUint64(e.mem.word(attachSeqOff)) }

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
	if err := e.markInUseLocked(); err != nil {
		return 0, err
	}
	h, err := e.current()
	if err != nil {
		return 0, err
	}
	switch word := e.mem.liveSize(); {
	case word > h.Size:
		return int64(h.Size), fmt.Errorf("%s: grow: the live-size word says %d bytes, more than the header's %d: %w", e.region.Name(), word, h.Size, recovery.ErrCorrupt)
	case word < h.Size:
		// A growth died between the header and the word: finish it.
		e.mem.setLiveSize(h.Size)
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
	if err := e.MarkInUse(); err != nil {
		return err
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

// Damage is what the open's check found wrong with a segment that a
// read-only open opened anyway (nil when it found nothing).
func (e *Envelope) Damage() error { return e.damage }

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
	if err := e.markInUseLocked(); err != nil {
		return err
	}
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

// Idle reports whether the open found the segment closed cleanly and no
// seat of the attached-process table taken: no process, alive or dead, can
// be in the middle of anything in it.
func (e *Envelope) Idle() bool { return e.idle }

// Found is the header as the open found it (after recovery), or as the
// creation wrote it. Its roots are current: the layers above set them at
// creation only.
func (e *Envelope) Found() Header { return e.hdr }

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
