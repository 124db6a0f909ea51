package mapped

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
)

func init() {
	// metaholder PATH: takes the meta lock (an OFD lock on byte 1<<60, as
	// an open or a growth does) through its own open of PATH, says
	// "locked", and on "trunc N" truncates PATH to N bytes, lets the lock
	// go and says "done": a peer that shrinks the backing.
	children["metaholder"] = func(args []string) int {
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 1 << 60, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLKW, &lk); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("locked")
		in := proctest.Lines()
		if !in.Scan() {
			return 2
		}
		var n int64
		if _, err := fmt.Sscanf(in.Text(), "trunc %d", &n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := unix.Ftruncate(fd, n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		_ = unix.Close(fd)
		fmt.Println("done")
		return 0
	}
	// openreport SPEC MODE: opens the segment (and allocates, if it can
	// write) and prints "ok" or "err corrupt=BOOL MESSAGE".
	children["openreport"] = func(args []string) int {
		m, _ := strconv.Atoi(args[1])
		s, err := Open(parseSpec(args[0]), Mode(m))
		if err != nil {
			fmt.Printf("err corrupt=%v %v\n", errors.Is(err, ErrCorrupt), err)
			return 0
		}
		if s.CanChange() {
			_, err = s.Allocate(64)
		}
		fmt.Println("ok", err)
		_ = s.Close()
		return 0
	}
}

// waitForLockWaiter waits until /proc/locks shows a process blocked on an
// OFD lock.
func waitForLockWaiter(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/locks")
		require.NoError(t, err)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "->") && strings.Contains(l, "OFDLCK") {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no process blocked on the meta lock")
}

// A peer (buggy, hostile, or a C program's shm_open with O_TRUNC)
// truncates the backing while an open waits for the meta lock: the open
// finds the segment shorter than its header says, or shorter than a
// header, and refuses it with ErrCorrupt. It must not trust a size it
// read before the lock (it would map past the end and die of SIGBUS).
func TestOpenOfASegmentTruncatedWhileItWaits(t *testing.T) {
	for _, tc := range []struct {
		to   int64
		mode Mode
	}{{4096, OpenOnly}, {4096, OpenReadOnly}, {4096, OpenCopyOnWrite}, {0, OpenOnly}, {700, OpenOnly}} {
		t.Run(fmt.Sprintf("%d/%v", tc.to, tc.mode), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "t.seg")
			s, err := Open(file.Path(p), CreateOnly, WithSize(256<<10))
			require.NoError(t, err)
			require.NoError(t, s.Close())

			holder := proctest.Start(t, "metaholder", p)
			holder.Expect("locked")
			opener := proctest.Start(t, "openreport", "file:"+p, strconv.Itoa(int(tc.mode)))
			waitForLockWaiter(t) // the opener has opened the file, and waits
			holder.Send("trunc %d", tc.to)
			holder.Expect("done")
			line := opener.Expect("")
			require.Equal(t, 0, opener.Wait(), "the opener crashed: %s", opener.Stderr())
			assert.Contains(t, line, "err corrupt=true", "a truncated segment is ErrCorrupt")
			assert.Contains(t, line, p, "the error names the path")
		})
	}
}
