package mapped

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/recovery"
)

func TestOpenModes(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		_, err := Open(b, OpenOnly)
		require.ErrorIs(t, err, ErrNotFound)
		assert.Contains(t, err.Error(), strings.TrimPrefix(b.Name(), "shm:"))
		_, err = Open(b, OpenReadOnly)
		require.ErrorIs(t, err, ErrNotFound)

		s, err := Open(b, CreateOnly, WithSize(64<<10))
		require.NoError(t, err)
		assert.True(t, s.RecoveryReport().Created)
		assert.Equal(t, "new", s.RecoveryReport().State.String())
		assert.NotContains(t, s.RecoveryReport().String(), "State(")
		assert.Equal(t, int64(64<<10), s.Size())
		assert.Equal(t, int64(DefaultMaxSize), s.MaxSize())
		assert.Equal(t, CreateOnly, s.Mode())
		assert.Equal(t, b.Name(), s.Name())

		_, err = Open(b, CreateOnly)
		require.ErrorIs(t, err, ErrExists)
		assert.Contains(t, err.Error(), strings.TrimPrefix(b.Name(), "shm:"))

		s2, err := Open(b, OpenOrCreate, WithSize(1<<20))
		require.NoError(t, err)
		assert.False(t, s2.RecoveryReport().Created)
		assert.Equal(t, int64(64<<10), s2.Size(), "WithSize is ignored for an existing segment")
		assert.True(t, s2.RecoveryReport().Clean())
		require.NoError(t, s2.Close())
		require.NoError(t, s.Close())

		ro, err := Open(b, OpenReadOnly)
		require.NoError(t, err)
		assert.Equal(t, recovery.StateClosed, ro.RecoveryReport().State)
		err = ro.Grow(4096)
		require.ErrorIs(t, err, ErrReadOnly)
		require.NoError(t, ro.Flush())
		require.NoError(t, ro.Close())

		info := func() Info {
			s := mustOpen(t, b, OpenOnly)
			i, err := s.Info()
			require.NoError(t, err)
			require.NoError(t, s.Close())
			return i
		}
		assert.Equal(t, uint64(3), info().Opens)
		assert.Equal(t, uint64(4), info().Opens)
	})
}

func TestOpenOrCreateCreates(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, OpenOrCreate, WithSize(100<<10), WithMaxSize(1<<30))
		rep := s.RecoveryReport()
		assert.True(t, rep.Created)
		assert.Equal(t, int64(100<<10), s.Size())
		assert.Equal(t, int64(1<<30), s.MaxSize())
	})
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s, err := Open(b, CreateOnly)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		require.NoError(t, s.Close())
		require.ErrorIs(t, s.Flush(), ErrClosed)
		require.ErrorIs(t, s.Grow(4096), ErrClosed)
		_, err = s.Info()
		require.ErrorIs(t, err, ErrClosed)
		assert.Contains(t, err.Error(), strings.TrimPrefix(b.Name(), "shm:"))
		assert.Zero(t, s.Size())
	})
}

func TestGrowInPlace(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(64<<10), WithMaxSize(1<<20))
		base := unsafe.Pointer(&s.env.Mem()[0])
		require.NoError(t, s.Grow(1))
		assert.Equal(t, int64(68<<10), s.Size(), "rounded up to a page")
		require.NoError(t, s.Grow(1<<20-68<<10))
		assert.Equal(t, int64(1<<20), s.Size())
		s.env.Mem()[1<<20-1] = 7 // the last byte has a page behind it
		assert.Equal(t, base, unsafe.Pointer(&s.env.Mem()[0]), "the base never moves")
		err := s.Grow(4096)
		require.ErrorIs(t, err, ErrNoSpace)
		assert.Contains(t, err.Error(), "maximum size")
		require.ErrorIs(t, s.Grow(0), ErrInvalidSize)
		require.ErrorIs(t, s.Grow(-5), ErrInvalidSize)
	})
}

func TestGrowPastFullTmpfsIsErrNoSpace(t *testing.T) {
	s := newShmSeg(t, WithMaxSize(MaxMaxSize))
	err := s.Grow(1 << 39) // far more than the tmpfs holds
	require.ErrorIs(t, err, ErrNoSpace)
	assert.Equal(t, int64(DefaultSize), s.Size(), "size unchanged after a failed grow")
	require.NoError(t, s.Grow(4096), "the segment still works")
}

func TestFixedSizeFlag(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<10), WithFixedSize())
	info, err := s.Info()
	require.NoError(t, err)
	assert.True(t, info.FixedSize)
	assert.Equal(t, int64(64<<10), s.MaxSize(), "a fixed-size segment reserves only its size")
}

func fileHash(t *testing.T, p string) [32]byte {
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	return sha256.Sum256(data)
}

func TestCopyOnWriteNeverChangesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cow.seg")
	s, err := Open(file.Path(p), CreateOnly, WithSize(64<<10))
	require.NoError(t, err)
	blk, err := s.Allocate(8)
	require.NoError(t, err)
	copy(blk, "original")
	h, err := s.Handle(blk)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	before := fileHash(t, p)

	c, err := Open(file.Path(p), OpenCopyOnWrite)
	require.NoError(t, err)
	blk, err = c.Block(h)
	require.NoError(t, err)
	assert.Equal(t, "original", string(blk[:8]))
	copy(blk, "CHANGED!")
	mem := c.env.Mem()
	for i := envelope.EnvelopeSize; i < int(c.Size()); i += 4096 {
		mem[i+3000] = 0xee
	}
	assert.Equal(t, "CHANGED!", string(blk[:8]), "the private copy sees its writes")
	more, err := c.Allocate(100)
	require.NoError(t, err, "a private copy can allocate")
	require.NoError(t, c.Deallocate(more))
	require.ErrorIs(t, c.Grow(4096), ErrReadOnly)
	require.NoError(t, c.Flush())
	require.NoError(t, c.Close())
	assert.Equal(t, before, fileHash(t, p), "copy-on-write must not change the file")

	s = mustOpen(t, file.Path(p), OpenOnly)
	blk, err = s.Block(h)
	require.NoError(t, err)
	assert.Equal(t, "original", string(blk[:8]))
	require.NoError(t, s.CheckSanity())
}

func TestSizeOptions(t *testing.T) {
	b, _ := newFile(t)
	cases := []struct {
		name string
		opts []Option
	}{
		{"below minimum", []Option{WithSize(MinSize - 1)}},
		{"zero", []Option{WithSize(0)}},
		{"negative", []Option{WithSize(-1)}},
		{"above max size", []Option{WithSize(2 << 20), WithMaxSize(1 << 20)}},
		{"max above limit", []Option{WithMaxSize(MaxMaxSize + 1)}},
	}
	for _, c := range cases {
		_, err := Open(b, CreateOnly, c.opts...)
		require.ErrorIs(t, err, ErrInvalidSize, c.name)
		assert.Contains(t, err.Error(), b.Name(), c.name)
	}
	_, err := os.Stat(b.Name())
	require.ErrorIs(t, err, fs.ErrNotExist, "a refused open creates nothing")
}

func TestInvalidShmNames(t *testing.T) {
	for _, n := range []string{"", "a/b", "nul\x00x", strings.Repeat("n", 256)} {
		for _, mode := range []Mode{CreateOnly, OpenOnly, OpenOrCreate, OpenReadOnly, OpenCopyOnWrite} {
			_, err := Open(shm.Named(n), mode)
			require.ErrorIs(t, err, ErrInvalidName, "%q %v", n, mode)
		}
	}
}

// writeSegmentFile creates a segment file and returns its path.
func writeSegmentFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "seg")
	s, err := Open(file.Path(p), CreateOnly, WithSize(64<<10))
	require.NoError(t, err)
	blk, err := s.Allocate(7)
	require.NoError(t, err)
	require.Equal(t, int64(payloadOff), int64(uintptr(unsafe.Pointer(&blk[0]))-uintptr(s.env.Base())))
	copy(blk, "payload")
	require.NoError(t, s.Close())
	return p
}

// payloadOff is where the first 7-byte block of a new segment lands.
var payloadOff = int(geometries[1].lo + classes[0].start) // 64 KiB: the small geometry, its table in the manager area

func patchFile(t *testing.T, p string, off int64, data []byte) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// resum recomputes a header copy's checksum after a field was changed.
func resum(t *testing.T, p string, copyOff int64) {
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	h := data[copyOff : copyOff+envelope.HeaderLen]
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(h[:508], crc32.MakeTable(crc32.Castagnoli)))
	patchFile(t, p, copyOff+508, sum[:])
}

func TestBadFiles(t *testing.T) {
	pngHead := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(i*7919 + i>>3)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, p string)
		want  error
		text  string
	}{
		{"empty", func(t *testing.T, p string) { require.NoError(t, os.WriteFile(p, nil, 0o600)) }, ErrCorrupt, "empty"},
		{"shorter than a header", func(t *testing.T, p string) { require.NoError(t, os.WriteFile(p, []byte("MAPSTORE"), 0o600)) }, ErrCorrupt, "shorter"},
		{"random bytes", func(t *testing.T, p string) { require.NoError(t, os.WriteFile(p, random, 0o600)) }, ErrCorrupt, "magic"},
		{"png", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, append(pngHead, make([]byte, 8192)...), 0o600))
		}, ErrCorrupt, "not a mapstore segment"},
		{"wrong magic", func(t *testing.T, p string) {
			src := writeSegmentFile(t)
			data, _ := os.ReadFile(src)
			copy(data[0:], "MAPSTORX")
			copy(data[envelope.HeaderOffB:], "MAPSTORX")
			require.NoError(t, os.WriteFile(p, data, 0o600))
		}, ErrCorrupt, "magic"},
		{"newer version", func(t *testing.T, p string) {
			src := writeSegmentFile(t)
			require.NoError(t, os.Rename(src, p))
			for _, off := range []int64{envelope.HeaderOffA, envelope.HeaderOffB} {
				patchFile(t, p, off+8, []byte{envelope.FormatVersion + 1, 0, 0, 0})
				resum(t, p, off)
			}
		}, ErrVersion, fmt.Sprintf("format version %d", envelope.FormatVersion+1)},
		{"older version", func(t *testing.T, p string) {
			// Format 1 had no occupied-seat mask: its seats would be
			// invisible to this build's liveness scan.
			src := writeSegmentFile(t)
			require.NoError(t, os.Rename(src, p))
			for _, off := range []int64{envelope.HeaderOffA, envelope.HeaderOffB} {
				patchFile(t, p, off+8, []byte{envelope.FormatVersion - 1, 0, 0, 0})
				resum(t, p, off)
			}
		}, ErrVersion, fmt.Sprintf("format version %d, this build reads %d", envelope.FormatVersion-1, envelope.FormatVersion)},
		{"no segment manager", func(t *testing.T, p string) {
			src := writeSegmentFile(t)
			require.NoError(t, os.Rename(src, p))
			patchFile(t, p, mgrOff, []byte("XXXXXXXX"))
		}, ErrCorrupt, "no segment manager"},
		{"both headers damaged", func(t *testing.T, p string) {
			src := writeSegmentFile(t)
			require.NoError(t, os.Rename(src, p))
			patchFile(t, p, 40, []byte{0xff})
			patchFile(t, p, envelope.HeaderOffB+40, []byte{0xff})
		}, ErrCorrupt, "checksum"},
		{"header size larger than the file", func(t *testing.T, p string) {
			src := writeSegmentFile(t)
			require.NoError(t, os.Rename(src, p))
			require.NoError(t, os.Truncate(p, 32<<10))
		}, ErrCorrupt, "the backing has 32768"},
	}
	for _, old := range []string{"01", "02", "03", "04", "05", "06"} {
		cases = append(cases, struct {
			name  string
			setup func(t *testing.T, p string)
			want  error
			text  string
		}{"manager format " + old, func(t *testing.T, p string) {
			require.NoError(t, os.Rename(writeSegmentFile(t), p))
			patchFile(t, p, mgrOff, []byte("MSHEAP"+old))
		}, ErrVersion, `segment manager format "` + old + `", this build reads "07"`})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.seg")
			c.setup(t, p)
			before := fileHash(t, p)
			for _, mode := range []Mode{OpenOnly, OpenReadOnly, OpenCopyOnWrite} {
				s, err := Open(file.Path(p), mode)
				if s != nil {
					s.Close()
				}
				require.ErrorIs(t, err, c.want, "mode %v", mode)
				assert.Contains(t, err.Error(), p)
				assert.Contains(t, err.Error(), c.text)
			}
			_, err := Open(file.Path(p), OpenOrCreate)
			require.ErrorIs(t, err, c.want, "OpenOrCreate never overwrites what is there")
			_, err = Open(file.Path(p), CreateOnly)
			require.ErrorIs(t, err, ErrExists)
			assert.Equal(t, before, fileHash(t, p), "a refused open leaves the file as it was")
		})
	}
}

// A creation that never finished (a header in state "creating", as older
// builds left one) is not a segment, and is not taken over: creations are
// built out of sight and linked into place whole.
func TestUnfinishedCreationIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "half.seg")
	p2 := writeSegmentFile(t)
	for _, off := range []int64{envelope.HeaderOffA, envelope.HeaderOffB} {
		patchFile(t, p2, off+64, []byte{byte(recovery.StateCreating), 0, 0, 0})
		resum(t, p2, off)
	}
	require.NoError(t, os.Rename(p2, p))
	before := fileHash(t, p)
	for _, mode := range []Mode{OpenOnly, OpenOrCreate, OpenReadOnly, OpenCopyOnWrite} {
		_, err := Open(file.Path(p), mode)
		require.ErrorIs(t, err, ErrCorrupt, "%v", mode)
		assert.Contains(t, err.Error(), "never finished")
	}
	assert.Equal(t, before, fileHash(t, p))
}

func TestOneHeaderCopyDamaged(t *testing.T) {
	for _, off := range []int64{envelope.HeaderOffA, envelope.HeaderOffB} {
		p := writeSegmentFile(t)
		patchFile(t, p, off+40, []byte{0xff, 0xff})
		s, err := Open(file.Path(p), OpenOnly)
		require.NoError(t, err)
		rep := s.RecoveryReport()
		require.Len(t, rep.DamagedHeaders, 1)
		assert.Contains(t, rep.String(), "damaged header copy")
		assert.False(t, rep.Clean())
		assert.Equal(t, "payload", string(s.env.Mem()[payloadOff:payloadOff+7]), "nothing stored is lost")
		require.NoError(t, s.Close())
		// The writable open rewrote the damaged copy.
		s = mustOpen(t, file.Path(p), OpenOnly)
		assert.Empty(t, s.RecoveryReport().DamagedHeaders)
		require.NoError(t, s.Close())
	}
}

func TestDirectoryAsPath(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []Mode{CreateOnly, OpenOnly, OpenOrCreate, OpenReadOnly, OpenCopyOnWrite} {
		_, err := Open(file.Path(dir), mode)
		require.Error(t, err, "%v", mode)
		if mode == CreateOnly {
			require.ErrorIs(t, err, ErrExists)
		} else {
			require.ErrorIs(t, err, ErrNotRegular, "%v", mode)
		}
		assert.Contains(t, err.Error(), dir)
	}
}

func TestNoWritePermission(t *testing.T) {
	dir, err := os.MkdirTemp("", "mapstore-perm-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	p := filepath.Join(dir, "ro.seg")
	s, err := Open(file.Path(p), CreateOnly, WithPerm(0o644))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, os.Chmod(p, 0o444))
	if os.Geteuid() != 0 {
		_, err := Open(file.Path(p), OpenOnly)
		require.ErrorIs(t, err, fs.ErrPermission)
		assert.Contains(t, err.Error(), p)
	} else {
		// Root ignores permission bits: try as an unprivileged user, from a
		// copy of the test binary that user can run.
		exe, err := os.Executable()
		require.NoError(t, err)
		data, err := os.ReadFile(exe)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "child.test"), data, 0o755))
		cmd := proctest.Command("perm", "file:"+p)
		cmd.Path = filepath.Join(dir, "child.test")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		c := proctest.StartCmd(t, cmd)
		line := c.Expect("err")
		assert.Contains(t, line, "permission denied")
		assert.Contains(t, line, p)
		require.Equal(t, 0, c.Wait())
	}
	ro, err := Open(file.Path(p), OpenReadOnly)
	require.NoError(t, err, "reading is still allowed")
	require.NoError(t, ro.Close())
}

func TestGrowSeenByAnotherProcess(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		base := unsafe.Pointer(&s.env.Mem()[0])
		for _, mode := range []string{"rw", "ro"} {
			c := proctest.Start(t, "attach", spec, mode)
			ready := c.Expect("ready")
			require.True(t, strings.HasPrefix(ready, strconv.Itoa(int(s.Size()))), ready)

			newSize := s.Size() * 10
			require.NoError(t, s.Grow(newSize-s.Size()))
			end := newSize - 8
			atomic.StoreUint64((*uint64)(unsafe.Pointer(&s.env.Mem()[end])), 0xfeedface)

			c.Send("read %d", end)
			got := c.Expect("value")
			assert.Equal(t, strconv.FormatUint(0xfeedface, 10)+" "+strconv.FormatInt(newSize, 10), got, "the child sees the new end without reopening")
			c.Send("close")
			c.Expect("closed")
			require.Equal(t, 0, c.Wait())
		}
		assert.Equal(t, base, unsafe.Pointer(&s.env.Mem()[0]))
	})
}

func TestSIGKILLWithOthersAttached(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		c := proctest.Start(t, "attach", spec)
		c.Expect("ready")
		c.Kill()
		s2 := mustOpen(t, b, OpenOnly)
		rep := s2.RecoveryReport()
		assert.False(t, rep.UncleanShutdown, "a live process still holds it")
		require.Len(t, rep.DeadProcesses, 1)
		require.NoError(t, s2.Close())
		require.NoError(t, s.Close())
		s3 := mustOpen(t, b, OpenOnly)
		assert.True(t, s3.RecoveryReport().Clean(), "%s", s3.RecoveryReport())
	})
}

func TestLastCloserMarksClosed(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		c := proctest.Start(t, "attach", spec)
		c.Expect("ready")
		c.Send("close")
		c.Expect("closed")
		require.Equal(t, 0, c.Wait())
		info, err := s.Info()
		require.NoError(t, err)
		assert.Equal(t, recovery.StateAttached, info.State, "not closed while one process remains")

		c = proctest.Start(t, "attach", spec)
		c.Expect("ready")
		require.NoError(t, s.Close())
		ro := mustOpen(t, b, OpenReadOnly)
		assert.Equal(t, recovery.StateAttached, ro.RecoveryReport().State, "the child still has it")
		require.NoError(t, ro.Close())
		c.Send("close")
		c.Expect("closed")
		require.Equal(t, 0, c.Wait())
		ro = mustOpen(t, b, OpenReadOnly)
		assert.Equal(t, recovery.StateClosed, ro.RecoveryReport().State)
		assert.True(t, ro.RecoveryReport().Clean())
	})
}

func TestErrorsNameTheBacking(t *testing.T) {
	_, err := Open(file.Path("/nonexistent-dir/x.seg"), OpenOnly)
	require.ErrorIs(t, err, ErrNotFound)
	require.True(t, errors.Is(err, fs.ErrNotExist))
	assert.Contains(t, err.Error(), "/nonexistent-dir/x.seg")
}

// BlockStart is the manager area's end: no block starts below it.
func TestBlockStart(t *testing.T) {
	s := newShmSeg(t)
	assert.Equal(t, s.h.geo.lo, s.BlockStart())
	blk, err := s.Allocate(64)
	require.NoError(t, err)
	off, ok := s.offsetOf(blk)
	require.True(t, ok)
	assert.GreaterOrEqual(t, off, s.BlockStart())
}
