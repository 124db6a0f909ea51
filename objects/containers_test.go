package objects

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

type record struct {
	ID   int64
	Name String
	Tags Vector[String]
}

func TestVectorBasics(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	assert.Equal(t, 0, v.Len())
	for i := range 1000 {
		require.NoError(t, v.Append(int64(i)))
	}
	require.Equal(t, 1000, v.Len())
	assert.GreaterOrEqual(t, v.Cap(), 1000)
	for i, p := range v.All() {
		require.Equal(t, int64(i), *p)
	}
	slices.SortFunc(v.Slice(), func(a, b int64) int { return cmp.Compare(b, a) })
	assert.Equal(t, int64(999), *v.At(0))
	require.NoError(t, v.Delete(0, 10))
	assert.Equal(t, 990, v.Len())
	assert.Equal(t, int64(989), *v.At(0))
	require.NoError(t, v.Insert(1, -1, -2))
	assert.Equal(t, []int64{989, -1, -2, 988}, v.Slice()[:4])
	require.NoError(t, v.Insert(0, make([]int64, 500)...)) // too many for in place: moves
	assert.Equal(t, 1492, v.Len())
	require.NoError(t, v.Truncate(3))
	require.NoError(t, v.Resize(6))
	assert.Equal(t, []int64{0, 0, 0, 0, 0, 0}, v.Slice())
	require.NoError(t, v.Clear())
	assert.Equal(t, 0, v.Len())
	assert.Panics(t, func() { v.At(0) })
	assert.Panics(t, func() { _ = v.Delete(0, 1) })
	assert.Panics(t, func() { _ = v.Insert(1, 5) })
	require.NoError(t, Destroy[Vector[int64]](seg, "v"))
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
	require.NoError(t, seg.CheckSanity())
}

func TestStringBasics(t *testing.T) {
	seg := newSeg(t)
	s, err := Construct(seg, "s", String{})
	require.NoError(t, err)
	assert.Equal(t, "", s.String())
	for _, v := range []string{"hi", "1234567", "12345678", "a much longer string than that", "x", "", "the quick brown fox jumps over the lazy dog", "again a long value"} {
		require.NoError(t, s.Set(v))
		assert.Equal(t, v, s.String())
		assert.Equal(t, len(v), s.Len())
		assert.True(t, s.Equal(v))
		assert.False(t, s.Equal(v+"!"))
		assert.Equal(t, 0, s.Compare(v))
		assert.Equal(t, -1, s.Compare(v+"!"))
	}
	require.NoError(t, Destroy[String](seg, "s"))
	assert.True(t, seg.AllMemoryDeallocated())
	require.NoError(t, seg.CheckSanity())
}

func TestListBasics(t *testing.T) {
	seg := newSeg(t)
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	for i := range 10 {
		_, err := l.PushBack(int64(i))
		require.NoError(t, err)
	}
	_, err = l.PushFront(-1)
	require.NoError(t, err)
	got := []int64{}
	for p := range l.All() {
		got = append(got, *p)
	}
	assert.Equal(t, []int64{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, got)
	e := l.Front().Next()
	_, err = l.InsertAfter(100, e)
	require.NoError(t, err)
	_, err = l.InsertBefore(200, e)
	require.NoError(t, err)
	require.NoError(t, l.Remove(l.Back()))
	got = got[:0]
	for e := l.Front(); e != nil; e = e.Next() {
		got = append(got, *e.Value())
	}
	assert.Equal(t, []int64{-1, 200, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8}, got)
	assert.Equal(t, 12, l.Len())
	for l.Len() > 0 {
		require.NoError(t, l.Remove(l.Front()))
	}
	assert.Nil(t, l.Front())
	require.NoError(t, Destroy[List[int64]](seg, "l"))
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestNestedDestroyFreesEverything(t *testing.T) {
	seg := newSeg(t)
	people, err := Construct(seg, "people", Vector[record]{})
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, people.Append(record{ID: int64(i)}))
		r := people.At(i)
		require.NoError(t, r.Name.Set(fmt.Sprintf("person number %d of many", i)))
		for j := range i % 5 {
			require.NoError(t, r.Tags.Append(String{}))
			require.NoError(t, r.Tags.At(j).Set(fmt.Sprintf("tag %d of person %d, long enough", j, i)))
		}
	}
	assert.Equal(t, "person number 7 of many", people.At(7).Name.String())
	assert.Equal(t, "tag 1 of person 7, long enough", people.At(7).Tags.At(1).String())
	require.NoError(t, people.Delete(3, 50))
	require.NoError(t, people.Truncate(100))
	require.NoError(t, seg.CheckSanity())
	assert.Equal(t, "person number 50 of many", people.At(3).Name.String())
	lists, err := Construct(seg, "lists", List[Vector[int64]]{})
	require.NoError(t, err)
	for i := range 50 {
		e, err := lists.PushBack(Vector[int64]{})
		require.NoError(t, err)
		for j := range i {
			require.NoError(t, e.Value().Append(int64(j)))
		}
	}
	require.NoError(t, lists.Remove(lists.Front().Next()))
	require.NoError(t, Destroy[Vector[record]](seg, "people"))
	require.NoError(t, Destroy[List[Vector[int64]]](seg, "lists"))
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestContainerCopyPanics(t *testing.T) {
	var v Vector[int64]
	assertPanicsWith(t, "not inside any open segment", func() { _ = v.Append(1) })
	var s String
	assertPanicsWith(t, "not inside any open segment", func() { _ = s.Set("x") })
	var l List[int64]
	assertPanicsWith(t, "not inside any open segment", func() { l.Len() })
}

func TestNewInto(t *testing.T) {
	seg := newSeg(t)
	head, err := Construct(seg, "head", listNode{})
	require.NoError(t, err)
	n, err := NewInto(&head.Next)
	require.NoError(t, err)
	n.Value = 7
	assert.Equal(t, int64(7), head.Next.Get().Value)
	require.NoError(t, Delete(seg, n))
	require.NoError(t, Destroy[listNode](seg, "head"))
	assert.True(t, seg.AllMemoryDeallocated())
	var stray Ptr[listNode]
	assertPanicsWith(t, "not inside any open segment", func() { _, _ = NewInto(&stray) })
}

func TestContainersReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	defer seg.Close()
	_, err = Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	ro, err := mapped.Open(file.Path(path), mapped.OpenReadOnly)
	require.NoError(t, err)
	defer ro.Close()
	v, err := Find[Vector[int64]](ro, "v")
	require.NoError(t, err)
	assert.ErrorIs(t, v.Append(1), mapped.ErrReadOnly)
}

func TestAppendTakesNoLock(t *testing.T) {
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[uint64]{})
	require.NoError(t, err)
	require.NoError(t, v.Reserve(100_000))
	before, err := seg.Info()
	require.NoError(t, err)
	for i := range 100_000 {
		require.NoError(t, v.Append(uint64(i)))
	}
	after, err := seg.Info()
	require.NoError(t, err)
	assert.Equal(t, before.LockAcquisitions, after.LockAcquisitions, "segment lock acquisitions during 1e5 appends within capacity")
	for c := v.Cap(); v.Cap() == c; {
		require.NoError(t, v.Append(1)) // until it grows, which takes it
	}
	grown, err := seg.Info()
	require.NoError(t, err)
	assert.Greater(t, grown.LockAcquisitions, after.LockAcquisitions)
}

func TestListRefusesElementsNotItsOwn(t *testing.T) {
	seg := newSeg(t)
	a, err := Construct(seg, "a", List[int64]{})
	require.NoError(t, err)
	b, err := Construct(seg, "b", List[int64]{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := a.PushBack(int64(i))
		require.NoError(t, err)
		_, err = b.PushBack(int64(10 + i))
		require.NoError(t, err)
	}
	for _, other := range []*ListElement[int64]{b.Front(), b.Back()} {
		assert.ErrorIs(t, a.Remove(other), mapped.ErrInvalidHandle, "another list's first or last element")
		_, err = a.InsertAfter(5, other)
		assert.ErrorIs(t, err, mapped.ErrInvalidHandle)
		_, err = a.InsertBefore(5, other)
		assert.ErrorIs(t, err, mapped.ErrInvalidHandle)
	}
	assert.Equal(t, 3, a.Len())
	assert.Equal(t, 3, b.Len())

	e := a.Back()
	require.NoError(t, a.Remove(e))
	assert.ErrorIs(t, a.Remove(e), mapped.ErrInvalidHandle, "removed twice")
	assert.Equal(t, 2, a.Len())

	empty, err := Construct(seg, "empty", List[int64]{})
	require.NoError(t, err)
	_, err = empty.InsertAfter(1, a.Front())
	assert.ErrorIs(t, err, mapped.ErrInvalidHandle, "a mark in an empty list")
	assert.Equal(t, 0, empty.Len())
	require.NoError(t, seg.CheckSanity())
	for _, n := range []string{"a", "b", "empty"} {
		require.NoError(t, Destroy[List[int64]](seg, n))
	}
	assert.True(t, seg.AllMemoryDeallocated())
}

// A List moves with what holds it: a Vector of Lists that grows keeps
// every list working.
func TestListsMoveWithTheirVector(t *testing.T) {
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[List[int64]]{})
	require.NoError(t, err)
	for i := range 40 { // grows, moving the headers, several times
		require.NoError(t, v.Append(List[int64]{}))
		for j := range 3 {
			_, err := v.At(i).PushBack(int64(10*i + j))
			require.NoError(t, err)
		}
	}
	for i, l := range v.All() {
		require.NoError(t, l.Remove(l.Front().Next()), "list %d", i)
		got := []int64{}
		for p := range l.All() {
			got = append(got, *p)
		}
		assert.Equal(t, []int64{int64(10 * i), int64(10*i + 2)}, got)
	}
	require.NoError(t, Destroy[Vector[List[int64]]](seg, "v"))
	assert.True(t, seg.AllMemoryDeallocated())
}
