package objects

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

type point struct {
	X, Y float64
	N    int64
}

// samePoint has point's layout under other names: interchangeable.
type samePoint struct {
	A, B float64
	C    int64
}

// otherPoint differs from point in one field's kind.
type otherPoint struct {
	X, Y float64
	N    uint32
	_    [4]byte
}

type inner struct {
	ID   int32
	Name string
}

type withString struct {
	A     int64
	Inner inner
}

type listNode struct {
	Next  Ptr[listNode]
	Value int64
}

func newSeg(t testing.TB) *mapped.Segment {
	t.Helper()
	path := filepath.Join(t.TempDir(), "objects.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	return seg
}

func TestConstructFindDestroy(t *testing.T) {
	seg := newSeg(t)
	_, err := Construct(seg, "first", int64(0)) // creates the directory's index
	require.NoError(t, err)
	free0 := seg.FreeMemory()

	p, err := Construct(seg, "p", point{1, 2, 3})
	require.NoError(t, err)
	assert.Equal(t, point{1, 2, 3}, *p)
	p.N = 42 // writes go to the segment

	q, err := Find[point](seg, "p")
	require.NoError(t, err)
	assert.Same(t, p, q)
	assert.Equal(t, int64(42), q.N)

	s, err := Find[samePoint](seg, "p")
	require.NoError(t, err, "a type of the same layout is accepted")
	assert.Equal(t, samePoint{1, 2, 42}, *s)

	a, err := ConstructArray(seg, "arr", 10, point{N: 7})
	require.NoError(t, err)
	require.Len(t, a, 10)
	for i := range a {
		assert.Equal(t, point{N: 7}, a[i])
		a[i].X = float64(i)
	}
	f, err := ConstructArrayFunc(seg, "func", 3, func(i int) point { return point{float64(i), float64(-i), int64(i * i)} })
	require.NoError(t, err)
	require.Len(t, f, 3)
	assert.Equal(t, point{2, -2, 4}, f[2])

	got, err := FindArray[point](seg, "arr")
	require.NoError(t, err)
	require.Len(t, got, 10)
	assert.Equal(t, float64(9), got[9].X)
	one, err := FindArray[point](seg, "p")
	require.NoError(t, err)
	assert.Len(t, one, 1, "FindArray takes a single object as an array of one")

	_, err = Find[point](seg, "arr")
	require.ErrorIs(t, err, ErrTypeMismatch, "Find of an array")
	assert.Contains(t, err.Error(), "array of 10")

	infos := map[string]Info{}
	for in := range Named(seg) {
		infos[in.Name] = in
	}
	require.Len(t, infos, 4)
	assert.Equal(t, Info{Name: "arr", Type: "github.com/mapstore/mapstore/objects.point", Count: 10, ElemSize: 24, Size: 240, Handle: infos["arr"].Handle}, infos["arr"])
	assert.Equal(t, int64(1), infos["p"].Count)

	for _, n := range []string{"p", "arr", "func"} {
		require.NoError(t, Destroy[point](seg, n))
		_, err := Find[point](seg, n)
		require.ErrorIs(t, err, mapped.ErrNotFound)
	}
	assert.Equal(t, free0, seg.FreeMemory())
	require.NoError(t, Destroy[int64](seg, "first"))
	require.NoError(t, seg.CheckSanity())
}

func TestFindOrConstruct(t *testing.T) {
	seg := newSeg(t)
	p, err := FindOrConstruct(seg, "counter", uint64(5))
	require.NoError(t, err)
	assert.Equal(t, uint64(5), *p)
	*p++
	q, err := FindOrConstruct(seg, "counter", uint64(100))
	require.NoError(t, err)
	assert.Equal(t, uint64(6), *q, "found, not constructed again")
	_, err = FindOrConstruct(seg, "counter", int32(0))
	require.ErrorIs(t, err, ErrTypeMismatch)
}

func TestBadInput(t *testing.T) {
	seg := newSeg(t)
	p, err := Construct(seg, "taken", point{1, 1, 1})
	require.NoError(t, err)

	t.Run("missing", func(t *testing.T) {
		_, err := Find[point](seg, "nope")
		require.ErrorIs(t, err, mapped.ErrNotFound)
		assert.Contains(t, err.Error(), `"nope"`)
		_, err = FindArray[point](seg, "nope")
		require.ErrorIs(t, err, mapped.ErrNotFound)
		require.ErrorIs(t, Destroy[point](seg, "nope"), mapped.ErrNotFound)
	})
	t.Run("taken", func(t *testing.T) {
		_, err := Construct(seg, "taken", point{9, 9, 9})
		require.ErrorIs(t, err, mapped.ErrExists)
		_, err = ConstructArray(seg, "taken", 3, point{})
		require.ErrorIs(t, err, mapped.ErrExists)
		assert.Equal(t, point{1, 1, 1}, *p, "the existing object is untouched")
	})
	t.Run("names", func(t *testing.T) {
		for _, name := range []string{"", strings.Repeat("x", mapped.MaxNameLen+1), "a\x00b"} {
			_, err := Construct(seg, name, point{})
			require.ErrorIs(t, err, mapped.ErrInvalidName, "%q", name)
			_, err = Find[point](seg, name)
			require.Error(t, err)
		}
		_, err := Construct(seg, strings.Repeat("x", mapped.MaxNameLen), point{})
		require.NoError(t, err, "a name of exactly the limit")
	})
	t.Run("type mismatch", func(t *testing.T) {
		_, err := Find[otherPoint](seg, "taken")
		require.ErrorIs(t, err, ErrTypeMismatch)
		assert.Contains(t, err.Error(), "objects.point")
		assert.Contains(t, err.Error(), "objects.otherPoint")
		assert.Contains(t, err.Error(), `"taken"`)
		require.ErrorIs(t, Destroy[int64](seg, "taken"), ErrTypeMismatch)
		q, err := Find[point](seg, "taken")
		require.NoError(t, err, "a refused Destroy changes nothing")
		assert.Equal(t, point{1, 1, 1}, *q)
		// A name made below objects, with no layout of ours.
		_, err = seg.CreateNamed("raw", false, mapped.NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
		_, err = Find[uint64](seg, "raw")
		require.ErrorIs(t, err, ErrTypeMismatch)
		assert.Contains(t, err.Error(), "unknown type")
	})
	t.Run("not plain data", func(t *testing.T) {
		_, err := Construct(seg, "ws", withString{})
		require.ErrorIs(t, err, ErrNotPlainData)
		assert.Contains(t, err.Error(), "objects.withString.Inner.Name (string)")
		_, err = Find[withString](seg, "taken")
		require.ErrorIs(t, err, ErrNotPlainData)
		cases := map[string]error{}
		_, cases["*int (pointer)"] = Construct(seg, "x", (*int)(nil))
		_, cases["[]int (slice)"] = Construct(seg, "x", []int(nil))
		_, cases["map[int]int (map)"] = Construct(seg, "x", map[int]int(nil))
		_, cases["error (interface)"] = Construct[error](seg, "x", nil)
		_, cases["chan int (chan)"] = Construct(seg, "x", (chan int)(nil))
		_, cases["func() (func)"] = Construct(seg, "x", (func())(nil))
		_, cases["unsafe.Pointer (unsafe.Pointer)"] = Construct(seg, "x", unsafe.Pointer(nil))
		_, cases["[3]struct { A int; S string }[0].S (string)"] = Construct(seg, "x", [3]struct {
			A int
			S string
		}{})
		_, cases["string (string)"] = New[string](seg)
		for want, err := range cases {
			require.ErrorIs(t, err, ErrNotPlainData, want)
			assert.Contains(t, err.Error(), want)
		}
		_, err = Find[point](seg, "x")
		require.ErrorIs(t, err, mapped.ErrNotFound, "nothing was created")
	})
	t.Run("array sizes", func(t *testing.T) {
		_, err := ConstructArray(seg, "neg", -1, point{})
		require.ErrorIs(t, err, mapped.ErrInvalidSize)
		_, err = ConstructArrayFunc(seg, "neg", -1, func(int) point { panic("called") })
		require.ErrorIs(t, err, mapped.ErrInvalidSize)
		_, err = ConstructArray(seg, "huge", math.MaxInt/8, point{})
		require.ErrorIs(t, err, mapped.ErrInvalidSize)
		_, err = NewArray[point](seg, math.MaxInt/8)
		require.ErrorIs(t, err, mapped.ErrInvalidSize)
		// One rule for both: zero elements is an (empty) array.
		free0 := seg.FreeMemory()
		z, err := NewArray[point](seg, 0)
		require.NoError(t, err)
		assert.Empty(t, z)
		assert.NotNil(t, z)
		require.NoError(t, DeleteArray(seg, z))
		assert.Equal(t, free0, seg.FreeMemory())
		require.ErrorIs(t, DeleteArray[point](seg, nil), mapped.ErrInvalidHandle)
		e, err := ConstructArray(seg, "empty", 0, point{})
		require.NoError(t, err)
		assert.Empty(t, e)
		e, err = FindArray[point](seg, "empty")
		require.NoError(t, err)
		assert.Empty(t, e)
		require.NoError(t, Destroy[point](seg, "empty"))
	})
	t.Run("delete", func(t *testing.T) {
		var local point
		require.ErrorIs(t, Delete(seg, &local), mapped.ErrInvalidHandle, "Go memory")
		require.ErrorIs(t, Delete[point](seg, nil), mapped.ErrInvalidHandle)
		a, err := NewArray[point](seg, 4)
		require.NoError(t, err)
		require.ErrorIs(t, Delete(seg, &a[1]), mapped.ErrInvalidHandle, "not at a block's start")
		require.ErrorIs(t, Delete(seg, p), mapped.ErrInvalidHandle, "a named object is not New's")
		require.NoError(t, Delete(seg, &a[0]))
		require.ErrorIs(t, Delete(seg, &a[0]), mapped.ErrInvalidHandle, "twice")
		require.NoError(t, seg.CheckSanity())
	})
	t.Run("unique", func(t *testing.T) {
		_, err := FindUnique[point](seg)
		require.ErrorIs(t, err, mapped.ErrNotFound, "never constructed")
		require.ErrorIs(t, DestroyUnique[point](seg), mapped.ErrNotFound)
	})
	t.Run("handles", func(t *testing.T) {
		var local int64
		_, err := HandleOf(seg, &local)
		require.ErrorIs(t, err, mapped.ErrInvalidHandle)
		h, err := HandleOf(seg, p)
		require.NoError(t, err)
		_, err = At[point](seg, h+1)
		require.ErrorIs(t, err, mapped.ErrInvalidHandle, "misaligned")
		_, err = At[[1 << 20]byte](seg, h)
		require.ErrorIs(t, err, mapped.ErrInvalidHandle, "runs past the end")
		_, err = At[point](seg, 12345)
		require.ErrorIs(t, err, mapped.ErrInvalidHandle, "another segment's tag")
	})
	require.NoError(t, seg.CheckSanity())
}

func TestUnique(t *testing.T) {
	seg := newSeg(t)
	c, err := ConstructUnique(seg, point{1, 2, 3})
	require.NoError(t, err)
	_, err = ConstructUnique(seg, point{})
	require.ErrorIs(t, err, mapped.ErrExists)
	d, err := FindUnique[point](seg)
	require.NoError(t, err)
	assert.Same(t, c, d)
	// The unique namespace is apart from ordinary names.
	_, err = Find[point](seg, "github.com/mapstore/mapstore/objects.point")
	require.ErrorIs(t, err, mapped.ErrNotFound)
	_, err = Construct(seg, "github.com/mapstore/mapstore/objects.point", point{})
	require.NoError(t, err)
	var found bool
	for in := range Named(seg) {
		if in.Unique {
			found = true
			assert.Equal(t, "github.com/mapstore/mapstore/objects.point", in.Type)
		}
	}
	assert.True(t, found)
	require.NoError(t, DestroyUnique[point](seg))
	_, err = FindUnique[point](seg)
	require.ErrorIs(t, err, mapped.ErrNotFound)
}

func TestNewDeleteHandles(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	p, err := New[point](seg)
	require.NoError(t, err)
	assert.Equal(t, point{}, *p, "zeroed")
	p.N = 77
	h, err := HandleOf(seg, p)
	require.NoError(t, err)
	q, err := At[point](seg, h)
	require.NoError(t, err)
	assert.Same(t, p, q)
	big, err := New[struct {
		_ [64]byte
		V int64
	}](seg)
	require.NoError(t, err)
	big.V = 1
	a, err := NewArray[int64](seg, 1000)
	require.NoError(t, err)
	require.Len(t, a, 1000)
	for _, v := range a {
		require.Zero(t, v)
	}
	require.NoError(t, Delete(seg, p))
	require.NoError(t, Delete(seg, big))
	require.NoError(t, DeleteArray(seg, a))
	assert.Equal(t, free0, seg.FreeMemory())
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestFindDoesNotAllocate(t *testing.T) {
	seg := newSeg(t)
	_, err := Construct(seg, "x", point{})
	require.NoError(t, err)
	_, err = Find[point](seg, "x") // fill the type cache
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Find[point](seg, "x"); err != nil {
			panic(err)
		}
	})
	assert.Zero(t, allocs)
}

func TestLayoutFingerprints(t *testing.T) {
	type a struct {
		X int32
		Y int64
	}
	type b struct {
		P int32
		Q int64
	}
	type c struct {
		X int64
		Y int32
	}
	type withPtrA struct{ P Ptr[a] }
	type withPtrC struct{ P Ptr[c] }
	type arr4 struct{ V [4]int32 }
	type arr2 struct{ V [2]int64 }
	assert.Equal(t, infoOf[a]().layout, infoOf[b]().layout, "names do not count")
	assert.NotEqual(t, infoOf[a]().layout, infoOf[c]().layout, "offsets count")
	assert.NotEqual(t, infoOf[withPtrA]().layout, infoOf[withPtrC]().layout, "a Ptr's target counts")
	assert.NotEqual(t, infoOf[arr4]().layout, infoOf[arr2]().layout, "element kinds and counts count")
	assert.NotEqual(t, infoOf[int64]().layout, infoOf[uint64]().layout)
	assert.NotEqual(t, infoOf[int64]().layout, infoOf[float64]().layout)
	require.NoError(t, infoOf[listNode]().err, "a self-referencing node")
	assert.NotEmpty(t, infoOf[listNode]().layout)
	name, layout, ok := decodeSpec(infoOf[listNode]().spec)
	require.True(t, ok)
	assert.Equal(t, "github.com/mapstore/mapstore/objects.listNode", name)
	assert.Equal(t, infoOf[listNode]().layout, layout)
}

func TestPtr(t *testing.T) {
	seg := newSeg(t)
	head, _ := buildList(t, seg, 5)
	var seen []int64
	for n := head.Next.Get(); n != nil; n = n.Next.Get() {
		seen = append(seen, n.Value)
	}
	assert.Equal(t, []int64{0, 1, 2, 3, 4}, seen)

	// A copy elsewhere in the segment points to the same node.
	other, err := Construct(seg, "other", listNode{})
	require.NoError(t, err)
	other.Next = head.Next
	assert.Same(t, head.Next.Get(), other.Next.Get())
	other.Next.Set(nil)
	assert.True(t, other.Next.IsNil())

	// A copy in Go memory refuses to be followed.
	local := *head
	assert.False(t, local.Next.IsNil())
	assertPanicsWith(t, "not inside any open segment", func() { local.Next.Get() })
	assertPanicsWith(t, "not inside any open segment", func() { local.Next.Set(nil) })

	// A target in another segment is refused.
	seg2 := newSeg(t)
	n2, err := New[listNode](seg2)
	require.NoError(t, err)
	assertPanicsWith(t, "is not in segment", func() { head.Next.Set(n2) })
	var goNode listNode
	assertPanicsWith(t, "is not in segment", func() { head.Next.Set(&goNode) })
}

func assertPanicsWith(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		require.NotNil(t, r, "no panic")
		assert.Contains(t, fmt.Sprint(r), want)
	}()
	f()
}

func TestClosedSegment(t *testing.T) {
	seg := newSeg(t)
	require.NoError(t, seg.Close())
	_, err := Construct(seg, "x", int64(1))
	require.ErrorIs(t, err, mapped.ErrClosed)
	_, err = Find[int64](seg, "x")
	require.ErrorIs(t, err, mapped.ErrClosed)
	require.True(t, errors.Is(Destroy[int64](seg, "x"), mapped.ErrClosed))
	_, err = New[int64](seg)
	require.ErrorIs(t, err, mapped.ErrClosed)
}

func TestMain(m *testing.M) { mainWithChildren(m) }

// Arrays of a zero-size type hold no bytes: any count up to the segment
// size limit is built at once (nothing to fill), and a larger one is
// ErrInvalidSize; neither runs a loop under the segment lock.
func TestZeroSizeArrays(t *testing.T) {
	seg := newSeg(t)
	done := make(chan error, 1)
	go func() {
		_, err := ConstructArray(seg, "huge", 1<<50, struct{}{})
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, mapped.ErrInvalidSize)
	case <-time.After(5 * time.Second):
		t.Fatal("ConstructArray of 2^50 empty structs did not return")
	}
	a, err := ConstructArray(seg, "many", 1<<40, struct{}{})
	require.NoError(t, err)
	assert.Len(t, a, 1<<40)
	b, err := FindArray[struct{}](seg, "many")
	require.NoError(t, err)
	assert.Len(t, b, 1<<40)
	require.NoError(t, Destroy[struct{}](seg, "many"))
	_, err = NewArray[struct{}](seg, 1<<41)
	require.ErrorIs(t, err, mapped.ErrInvalidSize)
}

// Ptr.Get racing Close: it either reads (zeros once the mapping is
// retired) or panics with the documented misuse message (the Ptr is no
// longer inside an open segment), never with a false one.
func TestPtrGetDuringClose(t *testing.T) {
	for run := range 50 {
		seg, err := mapped.Open(file.Path(filepath.Join(t.TempDir(), "p.seg")), mapped.CreateOnly)
		require.NoError(t, err)
		head, tail := buildList(t, seg, 100)
		tail.Next.Set(head) // a ring
		started, done := make(chan struct{}), make(chan any, 1)
		go func() {
			defer func() { done <- recover() }()
			close(started)
			for p := head; p != nil; p = p.Next.Get() {
			}
		}()
		<-started
		time.Sleep(time.Duration(run%10) * 20 * time.Microsecond)
		require.NoError(t, seg.Close())
		if r := <-done; r != nil {
			assert.Contains(t, fmt.Sprint(r), "not inside any open segment", "run %d", run)
		}
	}
}

// buildList constructs the named node "head" (value -1) and links n nodes
// after it, valued 0 to n-1; it returns the head and the last node.
func buildList(t testing.TB, seg *mapped.Segment, n int) (head, tail *listNode) {
	t.Helper()
	head, err := Construct(seg, "head", listNode{Value: -1})
	require.NoError(t, err)
	require.True(t, head.Next.IsNil())
	require.Nil(t, head.Next.Get())
	tail = head
	for i := range n {
		m, err := New[listNode](seg)
		require.NoError(t, err)
		m.Value = int64(i)
		tail.Next.Set(m)
		tail = m
	}
	return head, tail
}
