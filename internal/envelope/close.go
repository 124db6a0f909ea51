package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mapstore/mapstore/recovery"
)

// ErrClosed is wrapped by calls on an envelope after Close.
var ErrClosed = errors.New("segment is closed")

// ErrBusy is wrapped by an open that other processes' use of the segment
// forbids (a copy-on-write snapshot while writers are attached).
var ErrBusy = errors.New("segment is in use")

// Closing says what the layers above need while an envelope closes.
type Closing struct {
	// Keep is how many bytes from the segment's start Quiet reads (the
	// envelope's own pages are always there).
	Keep int64
	// Release releases what the open holds in the segment (the segment
	// lock). In an attached open it runs under the meta lock, before the
	// mapping is retired, through mem, the mapping: it must leave nothing
	// a goroutine of this process still running a call could take again
	// (see package mapped's close). last says no other open is attached,
	// so that no other process can be waiting for what it releases. In
	// an open that is not attached it runs once the mapping is retired,
	// with nil.
	Release func(mem []byte, last bool)
	// Quiet, if set, runs when this is the last attached open, under the
	// meta lock, once the mapping is retired and before the segment is
	// marked closed, on head, a copy of the segment's first Keep bytes
	// read from the backing (no goroutine of this process can change them
	// any more). A non-nil error says an operation was left half done, and
	// the segment is left attached (the next open recovers it) instead of
	// marked closed. Quiet may first change words of head that only this
	// open's own calls could have left (a claim the retire cut off from
	// its release); put(off) writes the 8 bytes of head at off back to the
	// segment. head is valid during the call only.
	Quiet func(head []byte, put func(off int) error) error
}

// Close ends this open: it releases what the open holds and gives up its
// seat through the mapping, retires the mapping (see region.Retire: calls
// still in flight in other goroutines read zeros and never fault), and,
// when it was the last attached open, checks the segment and marks it
// closed (flushing it first on a disk) through the backing's descriptor;
// then it closes the backing. No second mapping is made. The retired
// address range stays reserved until Unmap. Close is idempotent;
// afterwards the envelope's methods fail with ErrClosed.
func (e *Envelope) Close(c Closing) error {
	e.mu.Lock() // no meta-lock holder of this process meanwhile
	defer e.mu.Unlock()
	if e.closed.Swap(true) {
		return nil
	}
	var errs []error
	if e.seat >= 0 {
		errs = e.closeAttached(c)
	} else {
		errs = append(errs, e.region.Retire(e.Size()))
		if c.Release != nil {
			c.Release(nil, false)
		}
		errs = append(errs, e.trim())
	}
	errs = append(errs, e.region.CloseFile())
	return errors.Join(errs...)
}

// trim gives back the retired address space beyond the segment's size,
// read from the backing (the mapping shows zeros now): every access was
// bounded by a size read before the mapping was retired, and the size
// only grows.
func (e *Envelope) trim() error {
	if e.fixedSize != 0 {
		return nil // a private copy or a fixed view: Unmap gives it all back
	}
	var word [8]byte
	if _, err := e.region.ReadAt(word[:], liveSizeOff); err != nil {
		return nil // keep the range reserved until Unmap
	}
	return e.region.Trim(int64(min(binary.LittleEndian.Uint64(word[:]), uint64(e.maxLen))))
}

// closeAttached is Close for an attached open. Under the meta lock, so
// that no open, close or growth of any process runs meanwhile (the size
// cannot change, and the seats only by this close), it releases the
// segment lock (c.Release) and frees the seat through the mapping, then
// retires the live part of the mapping and gives back the rest. The
// order matters: the lock is released before the seat, so that no
// process sees it held by a free seat. Goroutines of this process still
// running a call do not touch the seats; what they could touch (the lock
// word, a lane's claim) c.Release and c.Quiet see to. The last open out
// then reads the segment's head from the backing and checks and marks
// it there (finish): the mapping is retired by then, so whatever a
// goroutine of this process writes through it afterwards stays in this
// process, and the flush covers every write that reached the segment.
func (e *Envelope) closeAttached(c Closing) []error {
	if _, err := e.region.Lock(metaLockOff, true, true); err != nil {
		// Without the meta lock the seat cannot be given up: it stays,
		// with its liveness lock until the descriptor is closed, and the
		// next writable open reaps it as a dead process's.
		if c.Release != nil {
			c.Release(e.mem, false)
		}
		rerr := e.region.Retire(e.Size())
		if rerr != nil {
			e.dropLocks(false)
		}
		return []error{err, rerr, e.trim()}
	}
	last := !e.mem.othersSeated(e.seat)
	if c.Release != nil {
		c.Release(e.mem, last)
	}
	e.freeSeat(e.mem, e.seat)
	rerr := e.region.RetireBounded(e.Size())
	errs := []error{rerr}
	if last {
		errs = append(errs, e.finish(c))
	}
	if rerr != nil {
		e.dropLocks(true)
	}
	// Otherwise the meta lock and the seat's liveness lock go with the
	// descriptor, which Close closes next: no mapping holds the open file
	// description any more (see region.CloseFile).
	return errs
}

// dropLocks releases the seat's liveness lock and, with meta, the meta
// lock, for a Close whose mapping could not be retired: the mapping still
// holds the open file description, and with it every OFD lock taken
// through it, after the descriptor is closed (until Unmap).
func (e *Envelope) dropLocks(meta bool) {
	_ = e.region.Unlock(seatLockOff + int64(e.seat))
	if meta {
		_ = e.region.Unlock(metaLockOff)
	}
}

// finish is the last attached open's part of Close, under the meta lock,
// once the mapping is retired and the seat freed: it reads the segment's
// head from the backing and, through the descriptor, clears stale seat
// bits and, unless quiet says an operation was left half done, marks a
// segment that is in use closed (a segment still marked closed, which
// nobody changed since it was last closed, needs nothing). No other open
// is attached, and none can attach meanwhile: nothing else changes these
// bytes.
func (e *Envelope) finish(c Closing) error {
	buf := headBufs.Get().(*[]byte)
	defer headBufs.Put(buf)
	if n := int(max(EnvelopeSize, c.Keep)); cap(*buf) < n {
		*buf = make([]byte, n)
	} else {
		*buf = (*buf)[:n]
	}
	head := view(*buf)
	if _, err := e.region.ReadAt(head, 0); err != nil {
		return err
	}
	if head.seatsTaken() {
		return nil // a seat taken by an open that died, awaiting recovery
	}
	mask := head.seatMask()
	head.clearStaleBits()
	if head.seatMask() != mask {
		if err := e.region.WriteAt(head[seatMaskOff:seatMaskOff+16], seatMaskOff); err != nil {
			return err
		}
	}
	h, err := head.header(e.region.Name())
	if err != nil {
		return err
	}
	if c.Quiet != nil {
		put := func(off int) error { return e.region.WriteAt(head[off:off+8], int64(off)) }
		if err := c.Quiet(head, put); err != nil {
			if h.State != recovery.StateAttached {
				// Left for recovery, which only an open that finds the
				// segment in use runs: say so (on a disk, durably).
				h.State = recovery.StateAttached
				h.BootID = bootID()
				if werr := e.writeHeaderAt(head, &h); werr == nil {
					_ = e.region.Sync(nil)
				}
			}
			return fmt.Errorf("%s: left attached for recovery: %w", e.region.Name(), err)
		}
	}
	if h.State != recovery.StateAttached {
		return nil // never changed since it was last closed
	}
	// Every write that reached the segment is in the page cache (the
	// mapping is retired: nothing of this process reaches it any more),
	// so one fdatasync writes the data; then the header.
	if err := e.region.Sync(nil); err != nil {
		return err
	}
	h.State = recovery.StateClosed
	h.Opens = atomic.LoadUint64(head.word(attachSeqOff))
	if err := e.writeHeaderAt(head, &h); err != nil {
		return err
	}
	return e.region.Sync(nil)
}

// headBufs holds the buffers finish reads a segment's head into: a close
// allocates none (16 KiB each, and garbage at once).
var headBufs = sync.Pool{New: func() any { return new([]byte) }}

// writeHeaderAt writes h with the next generation into head's copy that
// does not hold the current one (view.writeHeader), and that copy to the
// backing.
func (e *Envelope) writeHeaderAt(head view, h *Header) error {
	off := head.writeHeader(h)
	return e.region.WriteAt(head[off:off+HeaderLen], int64(off))
}

// Unmap releases the address range that Close retired. Nothing may use
// the mapping afterwards; call it when no goroutine can (package mapped
// does from a cleanup of its Segment).
func (e *Envelope) Unmap() error { return e.region.Unmap() }
