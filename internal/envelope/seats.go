package envelope

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// The attached-process table: one seat per writable open, kept alive by an
// OFD lock on the seat's lock byte that the kernel drops when the process
// dies. A seat (SeatLen bytes at seatsOff + i*SeatLen):
//
//	0   4  state (0 free, 1 attached)
//	4   4  pid
//	8   8  attach id (unique per attach over the segment's life)
//	16  48 reserved for the layers above (SeatWords)

func seatBase(i int) int { return seatsOff + i*SeatLen }

func (v view) seatState(i int) uint32 { return atomic.LoadUint32(v.word32(seatBase(i))) }

func (v view) seatPID(i int) uint32 { return atomic.LoadUint32(v.word32(seatBase(i) + 4)) }

// SeatAlive reports whether the process attached in seat i is alive: it
// is this open's own seat, or its liveness lock is held. A free seat is
// not alive.
func (e *Envelope) SeatAlive(i int) (bool, error) {
	if i < 0 || i >= MaxSeats {
		return false, nil
	}
	if i == e.seat {
		return true, nil
	}
	if e.mem.seatState(i) == 0 {
		return false, nil
	}
	return e.region.Held(seatLockOff + int64(i))
}

// SeatAttachID is the attach id recorded in seat i: unique per attach
// over the segment's life, so that a record naming a seat and its attach
// id is not mistaken for the seat's next occupant's.
func (e *Envelope) SeatAttachID(i int) uint64 {
	if i < 0 || i >= MaxSeats {
		return 0
	}
	return atomic.LoadUint64(e.mem.word(seatBase(i) + 8))
}

// SeatPID is the process id recorded in seat i.
func (e *Envelope) SeatPID(i int) int { return int(e.mem.seatPID(i)) }

// SeatWords are the six words of seat i that the layers above may use
// (for example to name the operation a process is in).
func (e *Envelope) SeatWords(i int) *[6]uint64 {
	return (*[6]uint64)(unsafe.Pointer(&e.mem[seatBase(i)+16]))
}

// claimSeat takes a free seat and its liveness lock, then runs p.Claimed.
// Meta lock held.
func (e *Envelope) claimSeat(p Params, rep *recovery.Report) error {
	for i := 0; i < MaxSeats; i++ {
		if e.mem.seatState(i) != 0 {
			continue
		}
		ok, err := e.region.Lock(seatLockOff+int64(i), true, false)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		b := seatBase(i)
		clear(e.mem[b : b+SeatLen])
		id := atomic.AddUint64(e.mem.word(attachSeqOff), 1)
		atomic.StoreUint64(e.mem.word(b+8), id)
		atomic.StoreUint32(e.mem.word32(b+4), uint32(os.Getpid()))
		atomic.StoreUint32(e.mem.word32(b), 1)
		e.seat = i
		if p.Claimed != nil {
			if err := p.Claimed(e, i, rep); err != nil {
				return fmt.Errorf("%s: attach: %w", e.region.Name(), err)
			}
		}
		return nil
	}
	return fmt.Errorf("%s: attach: all %d seats of the attached-process table are taken: %w", e.region.Name(), MaxSeats, region.ErrNoSpace)
}

// freeSeat clears seat i (through v) and, when it is ours, drops its
// liveness lock.
func (e *Envelope) freeSeat(v view, i int) {
	atomic.StoreUint32(v.word32(seatBase(i)), 0)
	if i == e.seat {
		_ = e.region.Unlock(seatLockOff + int64(i))
	}
}

// seatsTaken reports whether any seat is taken (through v): by a live
// process, or by a dead one awaiting recovery.
func (v view) seatsTaken() bool {
	for i := 0; i < MaxSeats; i++ {
		if v.seatState(i) != 0 {
			return true
		}
	}
	return false
}
