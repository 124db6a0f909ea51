package envelope

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// OFD locks belong to open file descriptions, so each Open here, with a
// descriptor of its own, holds its seat as another process would; closing
// an open's descriptor without detaching is that process dying.

func segPath(t *testing.T) string { return filepath.Join(t.TempDir(), "seats.seg") }

func openEnv(t *testing.T, p string, create bool, access Access) (*Envelope, *recovery.Report) {
	t.Helper()
	var flags region.Flags
	switch {
	case create:
		flags = region.Create
	case access != ReadWrite:
		flags = region.ReadOnly
	}
	r, err := region.Open(region.Spec{Name: p, Path: p, Open: os.OpenFile}, flags, 0o600)
	require.NoError(t, err)
	e, rep, err := Open(r, Params{Access: access, Size: 64 << 10, MaxSize: 1 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close(Closing{}); _ = e.Unmap() })
	return e, rep
}

// die ends e as a killed process would: its mapping and descriptor go
// (the mapping holds the open file description too), and with them its
// locks; its seat stays marked attached.
func die(t *testing.T, e *Envelope) {
	t.Helper()
	e.closed.Store(true)
	require.NoError(t, e.region.Close())
}

// maskOf is the set of seats whose bit the mask has, as e sees it.
func maskOf(e *Envelope) []int {
	var seats []int
	e.mem.occupied(func(i int) bool { seats = append(seats, i); return true })
	return seats
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestSeatMaskFollowsClaimsAndCloses(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	envs := []*Envelope{first}
	for range 69 {
		e, _ := openEnv(t, p, false, ReadWrite)
		envs = append(envs, e)
	}
	for i, e := range envs {
		require.Equal(t, i, e.Seat())
	}
	assert.Equal(t, seq(0, 70), maskOf(first), "both words of the mask")
	assert.Equal(t, [2]uint64{^uint64(0), 1<<6 - 1}, first.mem.seatMask())

	for _, i := range []int{3, 64, 65} {
		require.NoError(t, envs[i].Close(Closing{}))
	}
	want := append(append(seq(0, 3), seq(4, 64)...), seq(66, 70)...)
	assert.Equal(t, want, maskOf(first))
	for _, seat := range []int{3, 64, 65, 70} {
		e, rep := openEnv(t, p, false, ReadWrite)
		assert.Equal(t, seat, e.Seat(), "the lowest free seat")
		assert.Empty(t, rep.DeadProcesses)
	}
	assert.Equal(t, seq(0, 71), maskOf(first))
}

// Close frees its seat under the meta lock and leaves the seat's liveness
// lock to the descriptor's close, a moment later. An open in between
// finds the seat free yet locked: it takes the next one, leaves no bit
// for the skipped seat, and reports no dead process; once the closing
// open's descriptor is closed, the seat is taken again.
func TestFreeSeatStillLockedIsSkipped(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	closing, _ := openEnv(t, p, false, ReadWrite)
	require.Equal(t, 1, closing.Seat())
	// Close's part under the meta lock, without the descriptor's close.
	_, err := closing.region.Lock(metaLockOff, true, true)
	require.NoError(t, err)
	closing.freeSeat(closing.mem, closing.Seat())
	require.NoError(t, closing.region.Unlock(metaLockOff))
	assert.Equal(t, []int{0}, maskOf(first))

	e, rep := openEnv(t, p, false, ReadWrite)
	assert.Equal(t, 2, e.Seat(), "seat 1 is still locked")
	assert.Empty(t, rep.DeadProcesses)
	assert.Equal(t, []int{0, 2}, maskOf(first))

	closing.closed.Store(true)
	require.NoError(t, closing.region.Close())
	e, rep = openEnv(t, p, false, ReadWrite)
	assert.Equal(t, 1, e.Seat())
	assert.Empty(t, rep.DeadProcesses)
	assert.Equal(t, []int{0, 1, 2}, maskOf(first))
}

// A process that dies attached, in either word of the mask, is found by
// the next open and its seat and bit are given back.
func TestDeadSeatsFoundThroughTheMask(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	var envs []*Envelope
	for range 66 {
		e, _ := openEnv(t, p, false, ReadWrite)
		envs = append(envs, e)
	}
	die(t, envs[1])  // seat 2
	die(t, envs[64]) // seat 65
	ro, rep := openEnv(t, p, false, ReadOnly)
	assert.Equal(t, []recovery.Process{{Seat: 2, PID: os.Getpid()}, {Seat: 65, PID: os.Getpid()}}, rep.DeadProcesses)
	assert.False(t, rep.UncleanShutdown, "live processes hold it")
	require.NoError(t, ro.Close(Closing{}))

	e, rep := openEnv(t, p, false, ReadWrite)
	require.Len(t, rep.DeadProcesses, 2)
	assert.Equal(t, 2, e.Seat(), "the dead process's seat is free again")
	assert.NotContains(t, maskOf(first), 65)
	assert.Zero(t, first.mem.seatState(65))
}

// A bit over a free seat (its process died between setting the bit and
// marking the seat, or between freeing the seat and clearing the bit)
// costs a look: it is no process, dead or alive, and a writable open
// clears it. Bits beyond the last seat are never looked at.
func TestStaleSeatBits(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	first.mem.setSeatBit(10)
	first.mem.setSeatBit(100)
	*first.mem.word(seatMaskOff + 8) |= 1 << 63 // no seat 127

	_, rep := openEnv(t, p, false, ReadOnly)
	assert.Empty(t, rep.DeadProcesses)
	assert.Equal(t, []int{0, 10, 100}, maskOf(first), "a read-only open changes nothing")

	e, rep := openEnv(t, p, false, ReadWrite)
	assert.Empty(t, rep.DeadProcesses)
	assert.Equal(t, 1, e.Seat())
	assert.Equal(t, []int{0, 1}, maskOf(first), "stale bits cleared")
}

// The last open to close a segment that nobody changed writes nothing
// to the header; one that was marked in use is marked closed.
func TestLastCloseMarksClosedOnlyWhenInUse(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	require.NoError(t, first.Close(Closing{}))
	h0 := readHeader(t, p)
	require.Equal(t, recovery.StateClosed, h0.State)

	e, _ := openEnv(t, p, false, ReadWrite)
	require.NoError(t, e.Close(Closing{}))
	h1 := readHeader(t, p)
	assert.Equal(t, h0, h1, "the header was not written")

	e, _ = openEnv(t, p, false, ReadWrite)
	require.NoError(t, e.MarkInUse())
	h2 := readHeader(t, p)
	assert.Equal(t, recovery.StateAttached, h2.State)
	assert.Equal(t, uint64(3), h2.Opens)
	require.NoError(t, e.Close(Closing{}))
	h3 := readHeader(t, p)
	assert.Equal(t, recovery.StateClosed, h3.State)
	assert.Greater(t, h3.Generation, h2.Generation)
}

func readHeader(t *testing.T, p string) Header {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	h, _, err := ReadHeaders(b)
	require.NoError(t, err)
	return h
}

// An open whose backing another open grows after it was opened, before
// it takes the meta lock, reads the segment at its new size.
func TestOpenAfterAGrowthItDidNotSee(t *testing.T) {
	p := segPath(t)
	first, _ := openEnv(t, p, true, ReadWrite)
	r, err := region.Open(region.Spec{Name: p, Path: p, Open: os.OpenFile}, 0, 0o600)
	require.NoError(t, err)
	grown, err := first.Grow(256 << 10)
	require.NoError(t, err)
	require.Equal(t, int64(256<<10), grown)
	e, rep, err := Open(r, Params{Access: ReadWrite})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close(Closing{}); _ = e.Unmap() })
	assert.Equal(t, int64(256<<10), e.Size(), "report: %v", rep)
}
