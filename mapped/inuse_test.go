package mapped

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// The in-use mark is made durable lazily: a segment closed cleanly stays
// marked closed while opens only read it, and the first change of an open
// marks it in use (on a file, durably) before it changes anything.

// headerOnDisk decodes the header of b's backing as another process
// would read it: through a descriptor of its own, not the mapping.
func headerOnDisk(t *testing.T, b backing.Backing) envelope.Header {
	t.Helper()
	data, err := os.ReadFile(osPath(b))
	require.NoError(t, err)
	h, _, err := envelope.ReadHeaders(data)
	require.NoError(t, err)
	return h
}

// closedWithKeep makes a segment in b holding "keep" and a live block,
// closes it, and returns the block's handle.
func closedWithKeep(t *testing.T, b backing.Backing) Handle {
	t.Helper()
	s, err := Open(b, CreateOnly, WithSize(256<<10))
	require.NoError(t, err)
	h := keepAndBlock(t, s)
	require.NoError(t, s.Close())
	require.Equal(t, recovery.StateClosed, headerOnDisk(t, b).State)
	return h
}

// A process killed after Open and before its first change leaves a
// segment that opens clean: no unclean shutdown, nothing rolled back or
// checked, the dead process's seat given back.
func TestSIGKILLBeforeFirstChangeOpensClean(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		closedWithKeep(t, b)
		c := proctest.Start(t, "attach", spec)
		pid, _ := strconv.Atoi(strings.Fields(c.Expect("ready"))[1])
		c.Kill()
		assert.Equal(t, recovery.StateClosed, headerOnDisk(t, b).State, "the open did not mark it in use")

		ro := mustOpen(t, b, OpenReadOnly)
		rep := ro.RecoveryReport()
		assert.False(t, rep.UncleanShutdown, "%s", rep)
		assert.False(t, rep.RecoveryNeeded, "%s", rep)
		assert.Equal(t, recovery.StateClosed, rep.State)
		require.NoError(t, ro.Close())

		s := mustOpen(t, b, OpenOnly)
		rep = s.RecoveryReport()
		assert.False(t, rep.UncleanShutdown, "%s", rep)
		assert.False(t, rep.MachineRestarted, "%s", rep)
		assert.Equal(t, recovery.StateClosed, rep.State)
		require.Len(t, rep.DeadProcesses, 1, "the seat it held is still a fact worth reporting")
		assert.Equal(t, pid, rep.DeadProcesses[0].PID)
		acts := strings.Join(rep.Actions, "\n")
		assert.NotContains(t, acts, "rolled back")
		assert.NotContains(t, acts, "checked the allocator")
		assert.Contains(t, rep.String(), "released the seat of dead process "+strconv.Itoa(pid))
		n, err := s.LookupNamed("keep", false)
		require.NoError(t, err)
		assert.Equal(t, byte(42), n.Obj[0])
		require.NoError(t, s.Close())

		s = mustOpen(t, b, OpenOnly)
		assert.True(t, s.RecoveryReport().Clean(), "%s", s.RecoveryReport())
	})
}

// A process killed after its first change (and with nothing else
// attached) is an unclean shutdown: a read-only open says recovery is
// needed, a writable one recovers (checks the whole manager) and says so.
func TestSIGKILLAfterFirstChangeIsUncleanShutdown(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		closedWithKeep(t, b)
		c := proctest.Start(t, "attach", spec)
		pid, _ := strconv.Atoi(strings.Fields(c.Expect("ready"))[1])
		c.Send("change")
		c.Expect("changed")
		c.Kill()
		assert.Equal(t, recovery.StateAttached, headerOnDisk(t, b).State)

		ro, err := Open(b, OpenReadOnly)
		require.NoError(t, err)
		assert.True(t, ro.RecoveryReport().UncleanShutdown)
		assert.True(t, ro.RecoveryReport().RecoveryNeeded, "read-only cannot recover")
		assert.Contains(t, ro.RecoveryReport().String(), "unclean shutdown: recovery needed")
		require.NoError(t, ro.Close())

		s, err := Open(b, OpenOnly)
		require.NoError(t, err)
		rep := s.RecoveryReport()
		assert.True(t, rep.UncleanShutdown)
		assert.False(t, rep.MachineRestarted)
		require.Len(t, rep.DeadProcesses, 1)
		assert.Equal(t, pid, rep.DeadProcesses[0].PID)
		assert.Contains(t, rep.String(), "unclean shutdown: recovered")
		assert.Contains(t, rep.String(), "checked the allocator and the name directory: consistent")
		assert.NotContains(t, rep.String(), "needed", "a writable open recovered it")
		assert.Contains(t, rep.String(), "process "+strconv.Itoa(pid)+" ")
		require.NoError(t, s.CheckSanity())
		require.NoError(t, s.Close())
		assert.Equal(t, recovery.StateClosed, headerOnDisk(t, b).State)

		s, err = Open(b, OpenOnly)
		require.NoError(t, err)
		assert.True(t, s.RecoveryReport().Clean(), "recovered once, clean after: %s", s.RecoveryReport())
		require.NoError(t, s.Close())
	})
}

// When an open's first change returns, the header read through another
// descriptor says the segment is in use, and on a file the mark was
// synced first; before it (the open and any reads) it still says closed
// and nothing was synced. Every kind of change counts, Flush included.
func TestFirstChangeMarksInUseDurably(t *testing.T) {
	p := t.TempDir() + "/inuse.seg"
	b := file.Path(p)
	blk := closedWithKeep(t, b)
	changes := []struct {
		name string
		do   func(s *Segment) error
	}{
		{"Allocate", func(s *Segment) error { _, err := s.Allocate(100); return err }},
		{"AllocateAligned", func(s *Segment) error { _, err := s.AllocateAligned(100, 4096); return err }},
		{"Deallocate", func(s *Segment) error {
			bb, err := s.Block(blk)
			if err == nil {
				err = s.Deallocate(bb)
			}
			return err
		}},
		{"AllocateInto", func(s *Segment) error {
			n, err := s.LookupNamed("keep", false)
			if err == nil {
				clear(n.Obj)
				_, err = s.AllocateInto(n.Handle, 64)
			}
			return err
		}},
		{"DeallocateFrom", func(s *Segment) error {
			n, err := s.LookupNamed("keep", false)
			if err == nil {
				err = s.DeallocateFrom(n.Handle)
			}
			return err
		}},
		{"CreateNamed", func(s *Segment) error {
			_, err := s.CreateNamed("new", false, NameSpec{Count: 1, ElemSize: 8}, nil)
			return err
		}},
		{"RemoveNamed", func(s *Segment) error { return s.RemoveNamed("new", false, nil) }},
		{"Grow", func(s *Segment) error { return s.Grow(4096) }},
		{"Flush", func(s *Segment) error { return s.Flush() }},
	}
	for _, c := range changes {
		syncs := region.Syncs()
		s, err := Open(b, OpenOnly)
		require.NoError(t, err, c.name)
		_, err = s.LookupNamed("keep", false)
		require.NoError(t, err)
		_ = s.FreeMemory()
		_, err = s.Info()
		require.NoError(t, err)
		assert.Equal(t, recovery.StateClosed, headerOnDisk(t, b).State, "%s: an open that has only read leaves the segment marked closed", c.name)
		assert.Equal(t, syncs, region.Syncs(), "%s: an open that has only read syncs nothing", c.name)

		require.NoError(t, c.do(s), c.name)
		h := headerOnDisk(t, b)
		assert.Equal(t, recovery.StateAttached, h.State, "%s: in use once the first change returns", c.name)
		assert.Greater(t, region.Syncs(), syncs, "%s: the mark was synced", c.name)
		require.NoError(t, s.Close(), c.name)
		assert.Equal(t, recovery.StateClosed, headerOnDisk(t, b).State, c.name)
	}
}

// Opening, reading and closing a segment closed cleanly writes nothing to
// its header and syncs nothing, even when the open is writable.
func TestOpenReadCloseWritesNoHeader(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		closedWithKeep(t, b)
		before, err := os.ReadFile(osPath(b))
		require.NoError(t, err)
		syncs := region.Syncs()
		for _, mode := range []Mode{OpenOnly, OpenOrCreate, OpenReadOnly, OpenCopyOnWrite} {
			s, err := Open(b, mode)
			require.NoError(t, err, "%v", mode)
			n, err := s.LookupNamed("keep", false)
			require.NoError(t, err)
			assert.Equal(t, byte(42), n.Obj[0])
			assert.True(t, s.RecoveryReport().Clean(), "%v: %s", mode, s.RecoveryReport())
			require.NoError(t, s.Close())
		}
		after, err := os.ReadFile(osPath(b))
		require.NoError(t, err)
		hdrs := envelope.HeaderOffB + envelope.HeaderLen // both copies (the seats share their page)
		assert.Equal(t, before[:hdrs], after[:hdrs], "the header copies are as they were")
		assert.Equal(t, syncs, region.Syncs(), "nothing was synced")
	})
}

// The segment lock can be left held in a segment marked closed with no
// seat taken: an open that only read under the lock never marked the
// segment in use, and after a power loss the disk may hold the page with
// the lock word and not the page with its seat. That is no damage: a
// read-only open opens it, and a writable one releases the lock.
func TestStaleLockInSegmentMarkedClosed(t *testing.T) {
	p := t.TempDir() + "/stale.seg"
	b := file.Path(p)
	closedWithKeep(t, b)
	var word [8]byte
	binary.LittleEndian.PutUint64(word[:], 5*lockSeqOne|6) // held by seat 5, which is free
	patchFile(t, p, mLock, word[:])

	ro, err := Open(b, OpenReadOnly)
	require.NoError(t, err)
	require.NoError(t, ro.Close())

	s, err := Open(b, OpenOnly)
	require.NoError(t, err)
	assert.Contains(t, strings.Join(s.RecoveryReport().Actions, "\n"), "released the segment lock left held by an earlier occupant of seat 5")
	blk, err := s.Allocate(64)
	require.NoError(t, err)
	require.NoError(t, s.Deallocate(blk))
	require.NoError(t, s.CheckSanity())
	require.NoError(t, s.Close())
}
