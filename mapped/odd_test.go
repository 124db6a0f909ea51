package mapped

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
)

func init() {
	// aslimit: args spec extra size. Under an address-space limit (RLIMIT_AS)
	// extra bytes above what the process uses now, create the segment with
	// WithSize(size) and default options; print "max <MaxSize>" or
	// "err <error>".
	children["aslimit"] = childASLimit
	// fsizelimit: args spec limit. Under RLIMIT_FSIZE = limit bytes, fill
	// a new file segment with 64 KiB blocks until ErrNoSpace; print
	// "size <file size>".
	children["fsizelimit"] = childFSizeLimit
}

// openWithin opens b in mode in a goroutine and returns its error, or
// fails the test if Open does not return within d (it blocked or spun).
func openWithin(t *testing.T, b backing.Backing, mode Mode, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		s, err := Open(b, mode)
		if err == nil {
			_ = s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("Open(%s, %v) did not return within %v", b.Name(), mode, d)
	}
	return nil
}

var allModes = []Mode{CreateOnly, OpenOnly, OpenOrCreate, OpenReadOnly, OpenCopyOnWrite}

// A FIFO at the path is not a segment: every mode says so at once,
// instead of blocking in open(2) for a writer that never comes.
func TestFIFOIsRefusedAtOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(p, 0o600))
	name := fmt.Sprintf("mapstore-fifo-%d", os.Getpid())
	require.NoError(t, unix.Mkfifo(filepath.Join(shm.Dir, name), 0o600))
	t.Cleanup(func() { _ = os.Remove(filepath.Join(shm.Dir, name)) })
	for _, b := range []backing.Backing{file.Path(p), shm.Named(name)} {
		for _, mode := range allModes {
			err := openWithin(t, b, mode, 5*time.Second)
			if mode == CreateOnly {
				require.ErrorIs(t, err, ErrExists, "%s %v", b.Name(), mode)
				continue
			}
			require.ErrorIs(t, err, ErrNotRegular, "%s %v", b.Name(), mode)
			assert.Contains(t, err.Error(), "named pipe")
		}
	}
}

// A symbolic link to a missing file: OpenOrCreate neither spins nor
// creates the target; it says what is wrong.
func TestDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	p, target := filepath.Join(dir, "link.seg"), filepath.Join(dir, "missing.seg")
	require.NoError(t, os.Symlink(target, p))
	err := openWithin(t, file.Path(p), OpenOrCreate, 5*time.Second)
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), p)
	assert.Contains(t, err.Error(), "symbolic link")
	require.ErrorIs(t, openWithin(t, file.Path(p), OpenOnly, 5*time.Second), ErrNotFound)
	require.ErrorIs(t, openWithin(t, file.Path(p), CreateOnly, 5*time.Second), ErrExists)
	_, err = os.Lstat(target)
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing was created through the link")
}

// A symbolic link planted in /dev/shm is never followed (shm_open uses
// O_NOFOLLOW too): the file it points at is not opened, let alone
// formatted.
func TestShmNeverFollowsSymlinks(t *testing.T) {
	target := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(target, []byte("precious"), 0o666))
	for _, dest := range []string{target, filepath.Join(t.TempDir(), "missing")} {
		name := fmt.Sprintf("mapstore-link-%d", os.Getpid())
		link := filepath.Join(shm.Dir, name)
		require.NoError(t, os.Symlink(dest, link))
		for _, mode := range allModes {
			err := openWithin(t, shm.Named(name), mode, 5*time.Second)
			if mode == CreateOnly {
				require.ErrorIs(t, err, ErrExists, "%v", mode)
				continue
			}
			require.Error(t, err, "%v", mode)
			assert.True(t, errors.Is(err, ErrNotRegular) || errors.Is(err, ErrNotFound), "%v: %v", mode, err)
			assert.Contains(t, err.Error(), "symbolic link", "%v", mode)
		}
		require.NoError(t, os.Remove(link))
	}
	data, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "precious", string(data), "the link's target is untouched")
}

// An empty file at the name (planted by another user, or left by anything
// else) is not adopted and formatted: mapstore only formats files it
// creates, so the new segment can never end up owned by someone else or
// with their permissions.
func TestForeignEmptyFileIsNotFormatted(t *testing.T) {
	name := fmt.Sprintf("mapstore-planted-%d", os.Getpid())
	p := filepath.Join(shm.Dir, name)
	require.NoError(t, os.WriteFile(p, nil, 0o666))
	t.Cleanup(func() { _ = os.Remove(p) })
	require.NoError(t, os.Chmod(p, 0o666))
	owner := os.Getuid()
	if os.Geteuid() == 0 {
		require.NoError(t, os.Chown(p, 65534, 65534))
		owner = 65534
	}
	for _, mode := range []Mode{OpenOrCreate, OpenOnly} {
		err := openWithin(t, shm.Named(name), mode, 5*time.Second)
		require.ErrorIs(t, err, ErrCorrupt, "%v", mode)
		assert.Contains(t, err.Error(), "empty file")
		assert.Contains(t, err.Error(), "uid "+strconv.Itoa(owner))
	}
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Zero(t, fi.Size(), "still empty")
	assert.Equal(t, uint32(owner), fi.Sys().(*syscall.Stat_t).Uid)
}

func childASLimit(args []string) int {
	extra, _ := strconv.ParseUint(args[1], 10, 64)
	size, _ := strconv.ParseInt(args[2], 10, 64)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var vmKB uint64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
			fmt.Sscan(v, &vmKB)
		}
	}
	limit := vmKB<<10 + extra
	if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := Open(parseSpec(args[0]), CreateOnly, WithSize(size))
	if err != nil {
		fmt.Println("err", err)
		return 0
	}
	defer s.Close()
	if _, err := s.Allocate(100); err != nil {
		fmt.Println("err", err)
		return 0
	}
	fmt.Println("max", s.MaxSize(), strings.Join(s.RecoveryReport().Actions, "; "))
	return 0
}

// Under a limited address space (ulimit -v 8G) a create with default
// options reserves what it can instead of failing; a create that cannot
// even map the segment fails and leaves nothing behind, so the name is
// not bricked for later opens.
func TestLimitedAddressSpace(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector reserves terabytes of address space; the run without -race covers this")
	}
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		c := proctest.Start(t, "aslimit", spec, strconv.Itoa(8<<30), strconv.Itoa(DefaultSize))
		line := c.Expect("max")
		got, err := strconv.ParseInt(strings.Fields(line)[0], 10, 64)
		require.NoError(t, err, line)
		assert.Less(t, got, int64(DefaultMaxSize))
		assert.GreaterOrEqual(t, got, int64(DefaultSize))
		assert.Contains(t, line, "reserved")
		require.Equal(t, 0, c.Wait(), c.Stderr())

		s := mustOpen(t, b, OpenOnly)
		assert.Equal(t, got, s.MaxSize(), "the segment keeps the maximum its creator could reserve")
		require.NoError(t, s.Close())
		require.NoError(t, b.Remove())

		c = proctest.Start(t, "aslimit", spec, strconv.Itoa(256<<20), strconv.Itoa(512<<20))
		line = c.Expect("err")
		assert.Contains(t, line, "no space")
		require.Equal(t, 0, c.Wait(), c.Stderr())
		s, err = Open(b, OpenOrCreate, WithSize(64<<10))
		require.NoError(t, err, "the failed create left nothing at the name")
		assert.True(t, s.RecoveryReport().Created)
		require.NoError(t, s.Close())
	})
}

func childFSizeLimit(args []string) int {
	limit, _ := strconv.ParseUint(args[1], 10, 64)
	signal.Ignore(syscall.SIGXFSZ)
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := Open(parseSpec(args[0]), CreateOnly, WithSize(1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer s.Close()
	for {
		if _, err := s.Allocate(64 << 10); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			break
		}
	}
	if err := s.CheckSanity(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("size", s.Size())
	return 0
}

// When the disk has no room to double the segment, growth retries with
// what the allocation needs: the segment fills the room there is.
func TestGrowthUsesTheRoomThereIs(t *testing.T) {
	b, spec := newFile(t)
	const limit = 3 << 20
	c := proctest.Start(t, "fsizelimit", spec, strconv.Itoa(limit))
	size, err := strconv.ParseInt(c.Expect("size"), 10, 64)
	require.NoError(t, err)
	require.Equal(t, 0, c.Wait(), c.Stderr())
	t.Logf("file size limit %d: the segment grew to %d", limit, size)
	assert.Greater(t, size, int64(limit-(64<<10)-8*pageSize), "growth stopped with room to spare")
	assert.LessOrEqual(t, size, int64(limit))
	_ = b
}

// WithPerm takes read and write bits only.
func TestWithPermRefusesOtherBits(t *testing.T) {
	b, _ := newFile(t)
	for _, perm := range []fs.FileMode{0o755, 0o4600, 0o2660, 0o1666, fs.ModeSetuid | 0o600, fs.ModeDir | 0o600} {
		_, err := Open(b, CreateOnly, WithPerm(perm))
		require.ErrorIs(t, err, ErrInvalidOption, "%v", perm)
		assert.Contains(t, err.Error(), b.Name())
	}
	_, err := os.Stat(b.Name())
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing was created")
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	s := mustOpen(t, b, CreateOnly, WithPerm(0o640))
	fi, err := os.Stat(b.Name())
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode())
	require.NoError(t, s.Close())
}
