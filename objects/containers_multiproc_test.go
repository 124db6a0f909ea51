package objects

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// Containers shared by two processes that map the segment at different
// addresses: the parent writes them, a child reads them, changes every
// one of them (growing the segment on the way), and the parent sees the
// child's changes.

// xpGrow is how many elements the child appends to the vector: enough to
// outgrow the parent's segment, so that the parent reads storage beyond
// the size it mapped first.
const xpGrow = 100_000

// xpWrite builds the parent's containers.
func xpWrite(t *testing.T, seg *mapped.Segment) {
	t.Helper()
	v, err := Construct(seg, "xp.vec", Vector[int64]{})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, v.Append(int64(i)))
	}
	s, err := Construct(seg, "xp.str", String{})
	require.NoError(t, err)
	require.NoError(t, s.Set("written by the parent, long enough for a block"))
	short, err := Construct(seg, "xp.short", String{})
	require.NoError(t, err)
	require.NoError(t, short.Set("inline"))
	l, err := Construct(seg, "xp.list", List[int64]{})
	require.NoError(t, err)
	for i := range 5 {
		_, err := l.PushBack(int64(i * 10))
		require.NoError(t, err)
	}
	people, err := Construct(seg, "xp.people", Vector[record]{})
	require.NoError(t, err)
	for i := range 4 {
		require.NoError(t, people.Append(record{ID: int64(i)}))
		r := people.At(i)
		require.NoError(t, r.Name.Set(fmt.Sprintf("person %d, written by the parent", i)))
		for j := range i {
			require.NoError(t, r.Tags.Append(String{}))
			require.NoError(t, r.Tags.At(j).Set(fmt.Sprintf("tag %d of %d", j, i)))
		}
	}
	lv, err := Construct(seg, "xp.lists", List[Vector[int64]]{})
	require.NoError(t, err)
	for i := range 3 {
		e, err := lv.PushBack(Vector[int64]{})
		require.NoError(t, err)
		for j := range i + 1 {
			require.NoError(t, e.Value().Append(int64(100*i+j)))
		}
	}
}

// xpDescribe is what the containers hold, one line each, the vector's
// long tail summarised.
func xpDescribe(seg *mapped.Segment) (string, error) {
	var b strings.Builder
	v, err := Find[Vector[int64]](seg, "xp.vec")
	if err != nil {
		return "", err
	}
	var sum int64
	for _, x := range v.Slice() {
		sum += x
	}
	fmt.Fprintf(&b, "vec len %d sum %d head %v\n", v.Len(), sum, v.Slice()[:min(v.Len(), 5)])
	for _, name := range []string{"xp.str", "xp.short"} {
		s, err := Find[String](seg, name)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %q\n", name, s.String())
	}
	l, err := Find[List[int64]](seg, "xp.list")
	if err != nil {
		return "", err
	}
	var fwd, back []int64
	for e := l.Front(); e != nil; e = e.Next() {
		fwd = append(fwd, *e.Value())
	}
	for e := l.Back(); e != nil; e = e.Prev() {
		back = append(back, *e.Value())
	}
	fmt.Fprintf(&b, "list %d %v back %v\n", l.Len(), fwd, back)
	people, err := Find[Vector[record]](seg, "xp.people")
	if err != nil {
		return "", err
	}
	for _, r := range people.All() {
		var tags []string
		for _, tag := range r.Tags.All() {
			tags = append(tags, tag.String())
		}
		fmt.Fprintf(&b, "person %d %q %q\n", r.ID, r.Name.String(), tags)
	}
	lv, err := Find[List[Vector[int64]]](seg, "xp.lists")
	if err != nil {
		return "", err
	}
	for p := range lv.All() {
		fmt.Fprintf(&b, "vector %v\n", p.Slice())
	}
	return b.String(), nil
}

// xpMutate is the child's change to every container.
func xpMutate(seg *mapped.Segment) error {
	v, err := Find[Vector[int64]](seg, "xp.vec")
	if err != nil {
		return err
	}
	for i := range xpGrow {
		if err := v.Append(int64(1000 + i)); err != nil {
			return err
		}
	}
	if err := v.Delete(0, 10); err != nil {
		return err
	}
	*v.At(0) = -1
	if err := v.Insert(1, -2, -3); err != nil {
		return err
	}
	s, err := Find[String](seg, "xp.str")
	if err != nil {
		return err
	}
	if err := s.Set("the child wrote this one, and it is longer than the parent's value was"); err != nil {
		return err
	}
	short, err := Find[String](seg, "xp.short")
	if err != nil {
		return err
	}
	if err := short.Set("child"); err != nil {
		return err
	}
	l, err := Find[List[int64]](seg, "xp.list")
	if err != nil {
		return err
	}
	if _, err := l.PushFront(-5); err != nil {
		return err
	}
	if err := l.Remove(l.Back()); err != nil {
		return err
	}
	if _, err := l.InsertAfter(15, l.Front().Next().Next()); err != nil {
		return err
	}
	people, err := Find[Vector[record]](seg, "xp.people")
	if err != nil {
		return err
	}
	if err := people.At(1).Name.Set("renamed by the child"); err != nil {
		return err
	}
	if err := people.At(0).Tags.Append(String{}); err != nil {
		return err
	}
	if err := people.At(0).Tags.At(0).Set("the child's tag"); err != nil {
		return err
	}
	if err := people.Delete(2, 3); err != nil {
		return err
	}
	lv, err := Find[List[Vector[int64]]](seg, "xp.lists")
	if err != nil {
		return err
	}
	if err := lv.Front().Value().Append(7, 8, 9); err != nil {
		return err
	}
	return lv.Remove(lv.Front().Next())
}

// childContainers maps a spacer segment first (so that the segment lands
// at another address than the parent's), describes the containers,
// changes them, and describes them again.
func childContainers(args []string) int {
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
	fmt.Printf("base %d\n", uintptr(seg.Base()))
	for _, step := range []func() error{
		func() error { return xpPrint(seg, "before") },
		func() error { return xpMutate(seg) },
		func() error { return xpPrint(seg, "after") },
	} {
		if err := step(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// xpPrint prints the description on one line (quoted), after label.
func xpPrint(seg *mapped.Segment, label string) error {
	d, err := xpDescribe(seg)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", label, strconv.Quote(d))
	return nil
}

func TestContainersAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xp.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(256<<10))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	size0 := seg.Size()
	xpWrite(t, seg)
	mine, err := xpDescribe(seg)
	require.NoError(t, err)

	c := proctest.Start(t, "containers", path, filepath.Join(dir, "spacer.seg"))
	base, err := strconv.ParseUint(c.Expect("base "), 10, 64)
	require.NoError(t, err)
	assert.NotEqual(t, uint64(uintptr(seg.Base())), base, "the child mapped the segment at another address")
	before, err := strconv.Unquote(c.Expect("before "))
	require.NoError(t, err)
	after, err := strconv.Unquote(c.Expect("after "))
	require.NoError(t, err)
	require.Equal(t, 0, c.Wait(), c.Stderr())
	assert.Equal(t, mine, before, "the child read what the parent wrote")

	theirs, err := xpDescribe(seg)
	require.NoError(t, err)
	assert.Equal(t, after, theirs, "the parent sees what the child left")
	assert.Greater(t, seg.Size(), size0, "the child grew the segment")

	// And what that is, spelled out.
	v, err := Find[Vector[int64]](seg, "xp.vec")
	require.NoError(t, err)
	require.Equal(t, 100+xpGrow-10+2, v.Len())
	assert.Equal(t, []int64{-1, -2, -3, 11, 12}, v.Slice()[:5])
	assert.Equal(t, int64(1000+xpGrow-1), *v.At(v.Len() - 1))
	s, err := Find[String](seg, "xp.str")
	require.NoError(t, err)
	assert.Equal(t, "the child wrote this one, and it is longer than the parent's value was", s.String())
	short, err := Find[String](seg, "xp.short")
	require.NoError(t, err)
	assert.True(t, short.Equal("child"))
	l, err := Find[List[int64]](seg, "xp.list")
	require.NoError(t, err)
	var got []int64
	for p := range l.All() {
		got = append(got, *p)
	}
	assert.Equal(t, []int64{-5, 0, 10, 15, 20, 30}, got)
	people, err := Find[Vector[record]](seg, "xp.people")
	require.NoError(t, err)
	require.Equal(t, 3, people.Len())
	assert.Equal(t, []int64{0, 1, 3}, []int64{people.At(0).ID, people.At(1).ID, people.At(2).ID})
	assert.Equal(t, "renamed by the child", people.At(1).Name.String())
	assert.Equal(t, "the child's tag", people.At(0).Tags.At(0).String())
	assert.Equal(t, "tag 2 of 3", people.At(2).Tags.At(2).String())
	lv, err := Find[List[Vector[int64]]](seg, "xp.lists")
	require.NoError(t, err)
	require.Equal(t, 2, lv.Len())
	assert.Equal(t, []int64{0, 7, 8, 9}, lv.Front().Value().Slice())
	assert.Equal(t, []int64{200, 201, 202}, lv.Back().Value().Slice())

	// The parent changes them again over the child's storage, then
	// destroys everything: every block comes back.
	require.NoError(t, v.Append(1, 2, 3))
	require.NoError(t, s.Set("and the parent again"))
	require.NoError(t, l.Remove(l.Front()))
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Vector[int64]](seg, "xp.vec"))
	require.NoError(t, Destroy[String](seg, "xp.str"))
	require.NoError(t, Destroy[String](seg, "xp.short"))
	require.NoError(t, Destroy[List[int64]](seg, "xp.list"))
	require.NoError(t, Destroy[Vector[record]](seg, "xp.people"))
	require.NoError(t, Destroy[List[Vector[int64]]](seg, "xp.lists"))
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
	assert.GreaterOrEqual(t, seg.FreeMemory(), free0)
}
