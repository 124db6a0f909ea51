package mapped

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
)

func TestMain(m *testing.M) {
	proctest.Main(m, children)
}

// children are the processes tests start. Each takes a backing spec
// ("file:PATH" or "shm:NAME") as its first argument.
var children = map[string]func(args []string) int{
	// attach opens the segment, says ready, then obeys commands (read,
	// change, close).
	"attach": childAttach,
	// churn allocates, tags, verifies and frees blocks from two goroutines.
	"churn": childChurn,
	// killchurn churns blocks and names until it is killed.
	"killchurn": childKillChurn,
	// indexchurn fills the name directory and empties it again, over and
	// over, until it is killed.
	"indexchurn": childIndexChurn,
	// smallchurn churns small blocks through its ledger until it is killed.
	"smallchurn": childSmallChurn,
	// holdlock takes the segment lock, half-does an allocation, and waits
	// to be killed.
	"holdlock": childHoldLock,
	// holdfast takes the segment lock, half-does a fast-path allocation or
	// free of a small block (args[1]: alloc or free, args[2]: the handle of
	// a live 64-byte block for free, or of a reference word for alloc) and
	// waits to be killed.
	"holdfast": childHoldFast,
	// perm tries to open a segment for writing and prints the error.
	"perm": func(args []string) int {
		_, err := Open(parseSpec(args[0]), OpenOnly)
		fmt.Println("err", err)
		if err == nil {
			return 1
		}
		return 0
	},
}

// childOpen opens the segment a child's spec argument names, OpenOnly; a
// child that cannot says why and exits with status 2.
func childOpen(spec string) *Segment {
	seg, err := Open(parseSpec(spec), OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return seg
}

func parseSpec(s string) backing.Backing {
	if len(s) > 4 && s[:4] == "shm:" {
		return shm.Named(s[4:])
	}
	return file.Path(s[5:])
}

func childAttach(args []string) int {
	mode := OpenOnly
	if len(args) > 1 && args[1] == "ro" {
		mode = OpenReadOnly
	}
	seg, err := Open(parseSpec(args[0]), mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("ready %d %d\n", seg.Size(), os.Getpid())
	in := proctest.Lines()
	for in.Scan() {
		var cmd string
		var off int64
		fmt.Sscan(in.Text(), &cmd, &off)
		switch cmd {
		case "read": // read the uint64 at off, bounded by the current size
			if off+8 > seg.Size() {
				fmt.Printf("short %d\n", seg.Size())
				continue
			}
			v := atomic.LoadUint64((*uint64)(unsafe.Pointer(&seg.env.Mem()[off])))
			fmt.Printf("value %d %d\n", v, seg.Size())
		case "change": // the open's first change: allocate a block
			if _, err := seg.Allocate(64); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			fmt.Println("changed")
		case "close":
			if err := seg.Close(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			fmt.Println("closed")
			return 0
		}
	}
	return 0
}

// kinds are the backings every lifecycle test runs on.
type kind struct {
	name string
	make func(t *testing.T) (backing.Backing, string)
}

var shmSeq atomic.Int64

func newShm(t *testing.T) (backing.Backing, string) {
	name := "mapstore-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(shmSeq.Add(1), 10)
	t.Cleanup(func() { _ = shm.Remove(name) })
	return shm.Named(name), "shm:" + name
}

// newShmSeg creates a shared memory segment for one test.
func newShmSeg(t *testing.T, opts ...Option) *Segment {
	b, _ := newShm(t)
	return mustOpen(t, b, CreateOnly, opts...)
}

func newFile(t *testing.T) (backing.Backing, string) {
	p := filepath.Join(t.TempDir(), "test.seg")
	return file.Path(p), "file:" + p
}

var kinds = []kind{{"file", newFile}, {"shm", newShm}}

func forKinds(t *testing.T, f func(t *testing.T, b backing.Backing, spec string)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b, spec := k.make(t)
			f(t, b, spec)
		})
	}
}

func mustOpen(t *testing.T, b backing.Backing, mode Mode, opts ...Option) *Segment {
	t.Helper()
	s, err := Open(b, mode, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// keepAndBlock creates the name "keep" (one word, first byte 42) and a
// live 64-byte block in s, and returns the block's handle.
func keepAndBlock(t *testing.T, s *Segment) Handle {
	t.Helper()
	_, err := s.CreateNamed("keep", false, NameSpec{Count: 1, ElemSize: 8}, func(obj []byte) { obj[0] = 42 })
	require.NoError(t, err)
	blk, err := s.Allocate(64)
	require.NoError(t, err)
	h, err := s.Handle(blk)
	require.NoError(t, err)
	return h
}

// orShort is n, or short with -short.
func orShort(n, short int) int {
	if testing.Short() {
		return short
	}
	return n
}
