package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	// Keep is how many bytes from the segment's start Release and Quiet
	// read through their view (the envelope's own pages are always there).
	Keep int64
	// Release runs once the mapping is retired (no goroutine of this
	// process can reach the segment through it any more) and before this
	// open detaches: it releases what the open holds in the segment (the
	// segment lock), through side, a fresh mapping of the first Keep
	// bytes (nil when the open is not attached).
	Release func(side []byte)
	// Quiet, if set, runs when this is the last attached open, under the
	// meta lock, before the segment is marked closed: a non-nil error
	// says an operation was left half done, and the segment is left
	// attached (the next open recovers it) instead of marked closed.
	Quiet func(side []byte) error
}

// Close ends this open: it retires the mapping (see region.Retire: calls
// still in flight in other goroutines read zeros and never fault), calls
// c.Release, detaches (the last writer flushes and marks the segment
// closed), and closes the backing. The retired address range stays
// reserved until Unmap. Close is idempotent; afterwards the envelope's
// methods fail with ErrClosed.
func (e *Envelope) Close(c Closing) error {
	e.mu.Lock() // no meta-lock holder of this process meanwhile
	defer e.mu.Unlock()
	if e.closed.Swap(true) {
		return nil
	}
	attached := e.seat >= 0
	var side view
	var errs []error
	sideMapped := false
	if attached {
		m, err := e.region.MapSide(max(EnvelopeSize, c.Keep))
		if err == nil {
			side, sideMapped = m, true
		} else {
			// Without a second view, release and detach through the
			// mapping before retiring it.
			errs = append(errs, err)
			side = e.mem
		}
	}
	if !attached || sideMapped {
		errs = append(errs, e.region.Retire(e.Size()))
	}
	if c.Release != nil {
		c.Release(side)
	}
	// Give back the address space beyond the segment's size now (nothing
	// can reach it: every access is bounded by a size read before the
	// mapping was retired, and the size only grows), and the rest when
	// Unmap runs. The size is read after the mapping was retired.
	keep := int64(-1)
	if attached {
		errs = append(errs, e.detach(side, c.Quiet))
		if sideMapped {
			keep = int64(min(side.liveSize(), uint64(e.maxLen)))
			errs = append(errs, e.region.UnmapSide(side))
		} else {
			errs = append(errs, e.region.Retire(e.Size()))
		}
	}
	if e.fixedSize == 0 {
		if keep < 0 {
			var word [8]byte
			if _, err := e.region.ReadAt(word[:], liveSizeOff); err == nil {
				keep = int64(min(binary.LittleEndian.Uint64(word[:]), uint64(e.maxLen)))
			}
		}
		if keep >= 0 {
			errs = append(errs, e.region.Trim(keep))
		}
	}
	errs = append(errs, e.region.CloseFile())
	return errors.Join(errs...)
}

// detach gives up this open's seat; the last one out of a segment marked
// in use flushes it and marks it closed, unless quiet says an operation
// was left half done. A segment still marked closed (nobody changed it
// since it was last closed) needs neither: detach writes nothing but the
// seat.
func (e *Envelope) detach(v view, quiet func([]byte) error) error {
	if _, err := e.region.Lock(metaLockOff, true, true); err != nil {
		return err
	}
	defer func() { _ = e.region.Unlock(metaLockOff) }()
	e.freeSeat(v, e.seat)
	if v.seatsTaken() {
		return nil // others attached, alive or awaiting recovery
	}
	v.clearStaleBits()
	h, err := v.header(e.region.Name())
	if err != nil {
		return err
	}
	if quiet != nil {
		if err := quiet(v); err != nil {
			if h.State != recovery.StateAttached {
				// Left for recovery, which only an open that finds the
				// segment in use runs: say so (on a disk, durably).
				h.State = recovery.StateAttached
				h.BootID = bootID()
				v.writeHeader(&h)
				_ = e.region.Sync(v[:PageSize])
			}
			return fmt.Errorf("%s: left attached for recovery: %w", e.region.Name(), err)
		}
	}
	if h.State != recovery.StateAttached {
		return nil // never changed since it was last closed
	}
	// The data pages are dirty in the page cache (retiring the mapping
	// handed their dirty bits over), so one fdatasync writes them.
	if err := e.region.Sync(nil); err != nil {
		return err
	}
	h.State = recovery.StateClosed
	h.Opens = atomic.LoadUint64(v.word(attachSeqOff))
	v.writeHeader(&h)
	return e.region.Sync(v[:PageSize])
}

// Unmap releases the address range that Close retired. Nothing may use
// the mapping afterwards; call it when no goroutine can (package mapped
// does from a cleanup of its Segment).
func (e *Envelope) Unmap() error { return e.region.Unmap() }
