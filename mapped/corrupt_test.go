package mapped

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
)

func init() {
	// corruptop: args spec op offset. Opens the segment and runs op on
	// it, printing "err <error>" or "ok"; a fault kills it, a hang stalls it.
	children["corruptop"] = childCorruptOp
}

func childCorruptOp(args []string) int {
	seg, err := Open(parseSpec(args[0]), OpenOnly)
	if err != nil {
		fmt.Println("err", err)
		return 0
	}
	var off int64
	fmt.Sscan(args[2], &off)
	switch args[1] {
	case "block":
		_, err = seg.Block(seg.handle(uint64(off)))
	case "free":
		err = seg.Deallocate(seg.env.Mem()[off : off+1])
	case "aligned":
		var b []byte
		if b, err = seg.AllocateAligned(2*pageSize, 1<<20); err == nil {
			err = seg.Deallocate(b)
		}
	}
	if err != nil {
		fmt.Println("err", err)
	} else {
		fmt.Println("ok")
	}
	return 0
}

// corruptFile makes a file segment, lets build fill it, closes it, and
// returns its path with patch applied to its bytes.
func corruptFile(t *testing.T, build func(s *Segment) uint64, patch func(data []byte, at uint64)) (string, uint64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "seg")
	s, err := Open(file.Path(p), CreateOnly, WithSize(256<<10))
	require.NoError(t, err)
	at := build(s)
	require.NoError(t, s.Close())
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	patch(data, at)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p, at
}

func descOffset(data []byte, page uint64) uint64 {
	return binary.LittleEndian.Uint64(data[mTable:]) + page*descLen
}

// A continuation descriptor that names a head page far beyond the table
// (or after itself) is ErrCorrupt for Block and Deallocate, never a fault.
func TestWildContinuationIsErrCorrupt(t *testing.T) {
	for _, head := range []uint64{1 << 31, 1<<32 - 1, 60} {
		p, at := corruptFile(t, func(s *Segment) uint64 {
			b, err := s.Allocate(3 * pageSize)
			require.NoError(t, err)
			h, _ := s.Handle(b)
			return uint64(h.Offset()) + pageSize // inside the block: a continuation page
		}, func(data []byte, at uint64) {
			binary.LittleEndian.PutUint64(data[descOffset(data, at>>pageShift):], mkDesc(kCont, 0, 0, head))
		})
		for _, op := range []string{"block", "free"} {
			c := proctest.Start(t, "corruptop", "file:"+p, op, fmt.Sprint(at))
			line := c.Expect("")
			assert.Contains(t, line, "corrupt segment", "head %d, %s", head, op)
			assert.Contains(t, line, fmt.Sprint(at>>pageShift), "the error names the page")
			require.Equal(t, 0, c.Wait(), c.Stderr())
		}
	}
}

// A free span linked to itself makes a bin walk go round for ever under
// the segment lock; the walk is bounded and reports it.
func TestSelfLinkedFreeSpanIsErrCorrupt(t *testing.T) {
	p, _ := corruptFile(t, func(s *Segment) uint64 {
		// A two-page hole between two blocks: a free span in bin 1.
		a, err := s.Allocate(pageSize * 2)
		require.NoError(t, err)
		b, err := s.Allocate(pageSize * 2)
		require.NoError(t, err)
		_, err = s.Allocate(pageSize * 2)
		require.NoError(t, err)
		require.NoError(t, s.Deallocate(b))
		_ = a
		return 0
	}, func(data []byte, _ uint64) {
		span := binary.LittleEndian.Uint64(data[mBins+8:]) // bin 1: two pages
		require.NotZero(t, span)
		binary.LittleEndian.PutUint64(data[descOffset(data, span)+8:], mkLinks(0, span))
	})
	c := proctest.Start(t, "corruptop", "file:"+p, "aligned", "0")
	line := c.Expect("")
	assert.Contains(t, line, "corrupt segment")
	assert.Contains(t, line, "free-span bin 1")
	require.Equal(t, 0, c.Wait(), c.Stderr())
}

// Once an operation finds the segment corrupt, later calls that would walk
// its structures fail with ErrCorrupt, naming what was found; Close and
// the accessors still work.
func TestCorruptSegmentRefusesLaterCalls(t *testing.T) {
	p, _ := corruptFile(t, func(s *Segment) uint64 {
		b, err := s.Allocate(64)
		require.NoError(t, err)
		h, _ := s.Handle(b)
		return uint64(h.Offset())
	}, func(data []byte, at uint64) {
		d := descOffset(data, at>>pageShift)
		w := binary.LittleEndian.Uint64(data[d:])
		binary.LittleEndian.PutUint64(data[d:], w+5<<16) // the live count lies
	})
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	s := mustOpen(t, file.Path(p), OpenOnly)
	err := s.CheckSanity()
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = s.Allocate(64)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "live cells", "the refusal says what was found")
	_, err = s.LookupNamed("x", false)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.False(t, errors.Is(err, ErrNotFound))
	assert.NotZero(t, s.Size())
	require.NoError(t, s.Close())
}

// osPath is where b's bytes are on the OS filesystem.
func osPath(b backing.Backing) string {
	if n, ok := strings.CutPrefix(b.Name(), "shm:"); ok {
		return filepath.Join(shm.Dir, n)
	}
	return b.Name()
}

// A recovery that fails (the segment was left unclean, and its check
// finds damage) fails a writable Open with ErrCorrupt saying what failed,
// every time, and changes nothing; OpenReadOnly still opens the segment,
// says recovery is needed, and reads what is whole.
func TestFailedRecoveryLeavesReadOnlyInspection(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		h := keepAndBlock(t, s)
		require.NoError(t, s.Close())
		// Left unclean: a process attached, changed it and was killed.
		c := proctest.Start(t, "attach", spec)
		c.Expect("ready")
		c.Send("change")
		c.Expect("changed")
		c.Kill()
		// Then damage behind everyone's back: a run's live count.
		data, err := os.ReadFile(osPath(b))
		require.NoError(t, err)
		d := descOffset(data, uint64(h.Offset())>>pageShift)
		binary.LittleEndian.PutUint64(data[d:], binary.LittleEndian.Uint64(data[d:])+3<<16)
		require.NoError(t, os.WriteFile(osPath(b), data, 0o600))
		before := sha256.Sum256(data)

		for range 2 {
			_, err := Open(b, OpenOnly)
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "recovery")
			assert.Contains(t, err.Error(), "live cells")
		}
		after, err := os.ReadFile(osPath(b))
		require.NoError(t, err)
		assert.Equal(t, before, sha256.Sum256(after), "a failed recovery changes nothing")

		ro := mustOpen(t, b, OpenReadOnly)
		rep := ro.RecoveryReport()
		assert.True(t, rep.RecoveryNeeded, "%s", rep)
		n, err := ro.LookupNamed("keep", false)
		require.NoError(t, err)
		assert.Equal(t, byte(42), n.Obj[0])
		require.ErrorIs(t, ro.CheckSanity(), ErrCorrupt)
	})
}

// A segment closed cleanly whose manager words are damaged: a writable
// Open is ErrCorrupt; OpenReadOnly opens it for inspection, its report
// says what is wrong, and every call that would walk it refuses with
// ErrCorrupt.
func TestDamagedManagerOpensReadOnlyForInspection(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		_, err := s.CreateNamed("keep", false, NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		data, err := os.ReadFile(osPath(b))
		require.NoError(t, err)
		binary.LittleEndian.PutUint64(data[mTable:], 1<<40) // the descriptor table, far away
		require.NoError(t, os.WriteFile(osPath(b), data, 0o600))

		_, err = Open(b, OpenOnly)
		require.ErrorIs(t, err, ErrCorrupt)
		assert.Contains(t, err.Error(), "descriptor table")
		ro := mustOpen(t, b, OpenReadOnly)
		assert.Contains(t, strings.Join(ro.RecoveryReport().Actions, "\n"), "descriptor table")
		info, err := ro.Info()
		require.NoError(t, err)
		assert.Equal(t, int64(256<<10), info.Size)
		_, err = ro.LookupNamed("keep", false)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorIs(t, ro.CheckSanity(), ErrCorrupt)
		assert.Zero(t, ro.FreeMemory())
	})
}

// The live-size word is a copy of the header's size that processes read
// with one load. A damaged one is checked at every open: rewritten from
// the (checksummed) header when nobody holds the segment, so that Size is
// the truth and growth starts from it (it once grew a 256 KiB file to
// 3.2 GB).
func TestDamagedLiveSizeWord(t *testing.T) {
	p, _ := corruptFile(t, func(s *Segment) uint64 { return 0 }, func(data []byte, _ uint64) {
		binary.LittleEndian.PutUint64(data[1024:], 2<<30) // the live-size word: "2 GiB"
	})
	ro := mustOpen(t, file.Path(p), OpenReadOnly)
	assert.Equal(t, int64(256<<10), ro.Size(), "read-only: the header's size")
	require.NoError(t, ro.Close())
	s := mustOpen(t, file.Path(p), OpenOnly)
	assert.Equal(t, int64(256<<10), s.Size())
	assert.Contains(t, strings.Join(s.RecoveryReport().Actions, "\n"), "live-size word")
	_, err := s.Allocate(300000)
	require.NoError(t, err)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Less(t, fi.Size(), int64(2<<20), "growth started from the true size")
	require.NoError(t, s.CheckSanity())
}

// Error texts name the operation and the segment once, and do not repeat
// the words of the system call under them.
func TestErrorTextsSayThingsOnce(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<10), WithMaxSize(128<<10))
	_, growErr := s.Allocate(100 << 10)
	_, missingErr := Open(file.Path(b.Name()+".missing"), OpenOnly)
	removeErr := s.RemoveNamed("absent", false, nil)
	for what, err := range map[string]error{"grow": growErr, "open": missingErr, "remove": removeErr} {
		require.Error(t, err, what)
		assert.Equal(t, 1, strings.Count(err.Error(), b.Name()), "%s: %v", what, err)
		assert.NotContains(t, err.Error(), "open: open", what)
	}
	assert.Contains(t, removeErr.Error(), `remove "absent"`)
	assert.NotContains(t, removeErr.Error(), "find")
}
