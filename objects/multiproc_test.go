package objects

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

func mainWithChildren(m *testing.M) {
	proctest.Main(m, map[string]func(args []string) int{
		// walk maps a spacer segment first (so that its base address
		// differs from the parent's), walks the list at "head", appends a
		// node, and prints what it saw.
		"walk": childWalk,
		// killobj constructs and destroys named objects until killed.
		"killobj": childKillObjects,
		// containers reads, changes and reads again the containers of
		// TestContainersAcrossProcesses, at another base address.
		"containers": childContainers,
		// killcont runs random container calls, logging each before it
		// starts, until killed (containers_kill_test.go).
		"killcont": childKillContainers,
		// xpmaps reads and changes the maps of TestMapsAcrossProcesses.
		"xpmaps": childMaps,
		// killhash runs HashMap calls until killed (hashmap_kill_test.go).
		"killhash": childKillHashMap,
		// killhashins sets new HashMap keys until killed
		// (hashmap_kill_test.go).
		"killhashins": childKillHashInserts,
		// sync runs one of the synchronisation children (sync_multiproc_test.go).
		"sync": childSync,
		// qsend and qrecv send to and receive from a queue until killed,
		// logging each step (queue_kill_test.go).
		"qsend": childQueueSend,
		"qrecv": childQueueRecv,
		// killmap runs random Map calls, logging each before it starts,
		// until killed (btree_kill_test.go).
		"killmap": childKillMaps,
		// inplace kills itself at a step of an insert in place
		// (btree_kill_test.go).
		"inplace": childInPlace,
		// splitinplace kills itself at a step of an in-place leaf split
		// (btree_kill_test.go).
		"splitinplace": childSplitInPlace,
		// qovertake sends a message that overtakes and kills itself at a
		// step of it (queue_kill_test.go).
		"qovertake": childQueueOvertake,
	})
}

func childWalk(args []string) int {
	spacer, err := mapped.Open(file.Path(args[1]), mapped.CreateOnly, mapped.WithSize(64<<10), mapped.WithMaxSize(1<<30))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer spacer.Close()
	seg, err := mapped.Open(file.Path(args[0]), mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer seg.Close()
	head, err := Find[listNode](seg, "head")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var vals []string
	last := head
	for n := head.Next.Get(); n != nil; n = n.Next.Get() {
		vals = append(vals, strconv.FormatInt(n.Value, 10))
		last = n
	}
	n, err := New[listNode](seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n.Value = 100
	last.Next.Set(n)
	fmt.Printf("base %d values %s\n", uintptr(seg.Base()), strings.Join(vals, ","))
	return 0
}

// The same list, walked in two processes that map the segment at
// different addresses; the child's appended node is seen by the parent.
func TestPtrAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "list.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	defer seg.Close()
	_, prev := buildList(t, seg, 10)
	c := proctest.Start(t, "walk", path, filepath.Join(dir, "spacer.seg"))
	line := c.Expect("base ")
	require.Equal(t, 0, c.Wait(), c.Stderr())
	var base uintptr
	var vals string
	_, err = fmt.Sscanf(line, "%d values %s", &base, &vals)
	require.NoError(t, err)
	assert.Equal(t, "0,1,2,3,4,5,6,7,8,9", vals)
	assert.NotEqual(t, uintptr(seg.Base()), base, "the child mapped the segment at another address")
	require.NotNil(t, prev.Next.Get(), "the child's node is linked")
	assert.Equal(t, int64(100), prev.Next.Get().Value)
	assert.Nil(t, prev.Next.Get().Next.Get())
}

// elem is self-describing, so that a checker knows what the child meant
// to write without asking it: element i of an n-element object named
// name holds tag(name), i, n and a check word.
type elem struct {
	Tag, Index, Count, Check uint64
}

func tagOf(name string) uint64 {
	h := uint64(1469598103934665603)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return h
}

func elemFor(name string, i, n int) elem {
	t := tagOf(name)
	return elem{Tag: t, Index: uint64(i), Count: uint64(n), Check: t ^ uint64(i)*0x9e3779b97f4a7c15 ^ uint64(n)}
}

const killNames = 24

func childKillObjects(args []string) int {
	seg, err := mapped.Open(file.Path(args[0]), mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	seed, _ := strconv.ParseUint(args[1], 10, 64)
	rng := rand.New(rand.NewPCG(seed, 3))
	fmt.Println("ready")
	for {
		name := "o_" + strconv.Itoa(rng.IntN(killNames))
		if rng.IntN(2) == 0 {
			err := Destroy[elem](seg, name)
			if err != nil && !errors.Is(err, mapped.ErrNotFound) {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			continue
		}
		var err error
		switch n := 1 + rng.IntN(60); rng.IntN(3) {
		case 0:
			_, err = Construct(seg, name, elemFor(name, 0, 1))
		case 1:
			// ConstructArray copies one value: make it describe the
			// array, element index aside (checked as 0 for every element).
			_, err = ConstructArray(seg, name, n, elemFor(name, 0, n))
		default:
			_, err = ConstructArrayFunc(seg, name, n, func(i int) elem { return elemFor(name, i, n) })
		}
		if err != nil && !errors.Is(err, mapped.ErrExists) {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// verifyObjects checks that every name is absent or whole, then destroys
// them all and checks that exactly the baseline of free memory is back.
func verifyObjects(t *testing.T, seg *mapped.Segment, free0 int64) (present int) {
	t.Helper()
	require.NoError(t, seg.CheckSanity()) // takes the lock: a dead owner is rolled back here
	for k := range killNames {
		name := "o_" + strconv.Itoa(k)
		a, err := FindArray[elem](seg, name)
		if errors.Is(err, mapped.ErrNotFound) {
			continue
		}
		require.NoError(t, err, name)
		present++
		require.NotEmpty(t, a, name)
		fill := a[0].Index == 0 && len(a) > 1 && a[1].Index == 0 // ConstructArray: one value copied
		for i, e := range a {
			idx := i
			if fill {
				idx = 0
			}
			require.Equal(t, elemFor(name, idx, len(a)), e, "%s[%d] of %d", name, i, len(a))
		}
		require.NoError(t, Destroy[elem](seg, name))
	}
	require.Equal(t, free0, seg.FreeMemory(), "every block came back: none leaked, none lost")
	require.NoError(t, seg.CheckSanity())
	return present
}

// Children constructing and destroying named objects and arrays (the
// function form too) are killed at random moments; after each kill every
// name is whole or absent, the allocator is sane and free memory exact.
func TestSIGKILLDuringConstructAndDestroy(t *testing.T) {
	kills := 220
	if testing.Short() {
		kills = 40
	}
	path := filepath.Join(t.TempDir(), "kill.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(4<<20))
	require.NoError(t, err)
	// Create the directory's index up front: it stays (64 slots for up to
	// killNames names), so free memory has a fixed baseline.
	_, err = Construct(seg, "baseline", int64(0))
	require.NoError(t, err)
	require.NoError(t, Destroy[int64](seg, "baseline"))
	free0 := seg.FreeMemory()
	rng := rand.New(rand.NewPCG(5, 5))
	seen, rolled := 0, 0
	for k := range kills {
		c := proctest.Start(t, "killobj", path, strconv.FormatUint(rng.Uint64(), 10))
		c.Expect("ready")
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		if k%10 == 9 {
			// A fresh Open is the first to see the dead process.
			require.NoError(t, seg.Close())
			c.Kill()
			seg, err = mapped.Open(file.Path(path), mapped.OpenOnly)
			require.NoError(t, err)
			require.NotEmpty(t, seg.RecoveryReport().DeadProcesses)
		} else {
			c.Kill()
		}
		before := len(seg.RecoveryReport().Actions)
		seen += verifyObjects(t, seg, free0)
		rolled += strings.Count(strings.Join(seg.RecoveryReport().Actions[before:], "\n"), "rolled back")
	}
	require.NoError(t, seg.Close())
	t.Logf("%d kills; %d whole objects found; %d rollbacks done by this process on taking the lock over", kills, seen, rolled)
	assert.Positive(t, seen, "the children got some objects constructed")
}
