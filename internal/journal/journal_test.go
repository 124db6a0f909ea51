package journal

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/recovery"
)

// A segment-like buffer: the journal at 4096 (4096 bytes), data words
// from 8192 on.
const (
	jAt    = 4096
	jSize  = 4096
	dataLo = 8192
	bufLen = 16384
)

func newJournal(t *testing.T) (Journal, []uint64) {
	t.Helper()
	buf := make([]uint64, bufLen/8)
	return At(unsafe.Pointer(&buf[0]), jAt, jSize), buf
}

func data(buf []uint64, i int) *uint64 { return &buf[dataLo/8+i] }

func off(i int) uintptr { return uintptr(dataLo + 8*i) }

func TestReplayRestoresNewestFirst(t *testing.T) {
	j, buf := newJournal(t)
	*data(buf, 0), *data(buf, 1) = 10, 20
	j.Begin(7)
	j.Set64(off(0), 11)
	j.Set64(off(1), 21)
	j.Set64(off(0), 12) // the same word twice: the oldest value wins
	op, n, err := j.Pending()
	require.NoError(t, err)
	assert.Equal(t, uint64(7), op)
	assert.Equal(t, 3, n)
	op, n, err = j.Replay(dataLo, bufLen)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), op)
	assert.Equal(t, 3, n)
	assert.Equal(t, uint64(10), *data(buf, 0))
	assert.Equal(t, uint64(20), *data(buf, 1))
	op, _, err = j.Pending()
	require.NoError(t, err)
	assert.Zero(t, op, "idle after a replay")
	op, _, err = j.Replay(dataLo, bufLen)
	require.NoError(t, err)
	assert.Zero(t, op, "a second replay does nothing")
}

// An operation that finished leaves its entries behind; no damage to the
// active word can make a replay undo them.
func TestFinishedOperationIsNeverReplayed(t *testing.T) {
	j, buf := newJournal(t)
	j.Begin(3)
	for i := range 5 {
		j.Set64(off(i), uint64(100+i))
	}
	active := *j.word(activeOff)
	j.End()

	// Every single-byte corruption of the idle active word, and the old
	// value itself written back, either names nothing or is reported.
	var cases []uint64
	for b := 0; b < 8; b++ {
		for _, v := range []uint64{0x01, 0x80, 0xff, active >> (8 * b) & 0xff} {
			cases = append(cases, v<<(8*b))
		}
	}
	cases = append(cases, active)
	for _, bad := range cases {
		*j.word(activeOff) = bad
		op, n, err := j.Replay(dataLo, bufLen)
		if err != nil {
			require.ErrorIs(t, err, recovery.ErrCorrupt)
		} else {
			require.Zero(t, n, "active word %#x replayed %d entries of a finished operation (op %d)", bad, n, op)
		}
		for i := range 5 {
			require.Equal(t, uint64(100+i), *data(buf, i), "active word %#x undid a finished change", bad)
		}
	}
}

// A later operation's replay stops at its own entries: the ones an
// earlier, longer operation left after them are not its.
func TestReplayStopsAtTheOperationsOwnEntries(t *testing.T) {
	j, buf := newJournal(t)
	j.Begin(1)
	for i := range 6 {
		j.Set64(off(i), 1)
	}
	j.End()
	j.Begin(2)
	j.Set64(off(0), 2)
	j.Set64(off(1), 2)
	op, n, err := j.Replay(dataLo, bufLen)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), op)
	assert.Equal(t, 2, n)
	for i := range 6 {
		assert.Equal(t, uint64(1), *data(buf, i), "word %d", i)
	}
}

// Entries whose offsets fall outside what the journal may restore (below
// lo, at or past hi, misaligned, inside the journal) are corruption, and
// nothing is written.
func TestReplayRefusesOffsetsOutsideItsRange(t *testing.T) {
	for name, bad := range map[string]uintptr{
		"header area":    8,
		"past the end":   bufLen,
		"misaligned":     off(1) + 3,
		"in the journal": jAt + 64,
	} {
		t.Run(name, func(t *testing.T) {
			j, buf := newJournal(t)
			*data(buf, 0) = 5
			j.Begin(1)
			j.Set64(off(0), 6)
			// Forge a second entry naming bad.
			e := j.entry(1)
			seq := *j.word(activeOff) >> 16 & seqMask
			*j.word(e + 8) = 0
			*j.word(e) = entryValid | seq<<seqShift | uint64(bad)
			_, _, err := j.Replay(dataLo, bufLen)
			require.ErrorIs(t, err, recovery.ErrCorrupt)
			assert.Equal(t, uint64(6), *data(buf, 0), "nothing restored")
		})
	}
}

// A journal that fills up panics rather than record past its end.
func TestJournalFullPanics(t *testing.T) {
	j, _ := newJournal(t)
	j.Begin(1)
	require.Panics(t, func() {
		for range jSize {
			j.Set64(off(0), 1)
		}
	})
}
