package envelope

import (
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

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
//
// The occupied-seat mask (two words at seatMaskOff: bit i%64 of word i/64
// for seat i; bit 63 of the second word, seat 127, does not exist and is
// ignored) names the seats worth looking at, so that an open reads one
// cache line and tests only those seats' liveness locks instead of all
// MaxSeats. A seat's bit is set before the seat is marked attached and
// cleared after it is marked free, so whatever instruction a process dies
// at, an attached seat always has its bit; a bit over a free seat (left by
// a process that died between the two steps) only costs a look, and a
// writable open clears it. The mask and the seats change only under the
// meta lock; the atomic steps order them for processes that die.

func seatBase(i int) int { return seatsOff + i*SeatLen }

func (v view) seatState(i int) uint32 { return atomic.LoadUint32(v.word32(seatBase(i))) }

func (v view) seatPID(i int) uint32 { return atomic.LoadUint32(v.word32(seatBase(i) + 4)) }

// seatMask loads the occupied-seat mask, without the bit that names no
// seat: whatever the segment holds, it names seats below MaxSeats.
func (v view) seatMask() [2]uint64 {
	return [2]uint64{
		atomic.LoadUint64(v.word(seatMaskOff)),
		atomic.LoadUint64(v.word(seatMaskOff+8)) & (1<<(MaxSeats-64) - 1),
	}
}

func (v view) setSeatBit(i int) { atomic.OrUint64(v.word(seatMaskOff+8*(i/64)), 1<<(i%64)) }

func (v view) clearSeatBit(i int) { atomic.AndUint64(v.word(seatMaskOff+8*(i/64)), ^uint64(1<<(i%64))) }

// occupied calls f for each seat whose bit is set in the mask (through v),
// in order, until f returns false. It visits at most MaxSeats seats.
func (v view) occupied(f func(i int) bool) {
	m := v.seatMask()
	for w := range m {
		for bs := m[w]; bs != 0; bs &= bs - 1 {
			if !f(w*64 + bits.TrailingZeros64(bs)) {
				return
			}
		}
	}
}

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

// pid is this process's id (os.Getpid is a system call each time).
var pid = sync.OnceValue(os.Getpid)

// claimSeat takes a seat whose bit is clear in the mask, and its liveness
// lock, then runs p.Claimed. Meta lock held (stale bits already cleared,
// see clearStaleBits).
func (e *Envelope) claimSeat(p Params, rep *recovery.Report) error {
	m := e.mem.seatMask()
	for i := 0; i < MaxSeats; i++ {
		if m[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		e.mem.setSeatBit(i)
		ok, err := e.region.Lock(seatLockOff+int64(i), true, false)
		if err != nil || !ok {
			// Held by an open that has no bit here: one closing, whose
			// descriptor (and with it the lock) goes in a moment (see
			// freeSeat). Leave the seat alone.
			e.mem.clearSeatBit(i)
			if err != nil {
				return err
			}
			continue
		}
		b := seatBase(i)
		clear(e.mem[b : b+SeatLen])
		id := atomic.AddUint64(e.mem.word(attachSeqOff), 1)
		atomic.StoreUint64(e.mem.word(b+8), id)
		atomic.StoreUint32(e.mem.word32(b+4), uint32(pid()))
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

// freeSeat clears seat i (through v), then its bit in the mask. Meta lock
// held. The liveness lock of a seat that is ours is not dropped here:
// Close frees its own seat and closes the descriptor, which drops it (no
// mapping of this open holds the file by then), a few microseconds later;
// meanwhile an open that tries the free seat finds it locked and takes
// another (claimSeat), and the seat is no one's to look at (free).
func (e *Envelope) freeSeat(v view, i int) {
	atomic.StoreUint32(v.word32(seatBase(i)), 0)
	v.clearSeatBit(i)
}

// clearStaleBits clears the mask's bits over free seats (through v), left
// by processes that died while claiming or freeing one. Meta lock held.
func (v view) clearStaleBits() {
	v.occupied(func(i int) bool {
		if v.seatState(i) == 0 {
			v.clearSeatBit(i)
		}
		return true
	})
}

// othersSeated reports whether a seat other than seat is taken (through
// v): by a live process, or by a dead one awaiting recovery. Meta lock
// held.
func (v view) othersSeated(seat int) bool {
	taken := false
	v.occupied(func(i int) bool {
		taken = i != seat && v.seatState(i) != 0
		return !taken
	})
	return taken
}

// seatsTaken reports whether any seat is taken (through v): by a live
// process, or by a dead one awaiting recovery.
func (v view) seatsTaken() bool {
	taken := false
	v.occupied(func(i int) bool {
		taken = v.seatState(i) != 0
		return !taken
	})
	return taken
}
