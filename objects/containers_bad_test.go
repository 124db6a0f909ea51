package objects

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Bad input to the containers: indexes out of range, a full segment, a
// copy in Go memory, a read-only segment, a header overwritten with
// garbage. None may fault; each has its documented outcome.

// panicOnFault turns a fault (SIGSEGV, SIGBUS) on a bad address into a
// panic for the rest of the test, so that a container that reads outside
// the segment fails the test instead of killing it.
func panicOnFault(t *testing.T) {
	old := debug.SetPanicOnFault(true)
	t.Cleanup(func() { debug.SetPanicOnFault(old) })
}

// outcome runs f and returns what it panicked with (nil: it returned).
func outcome(f func()) (r any) {
	defer func() { r = recover() }()
	f()
	return nil
}

func TestVectorOutOfRangePanics(t *testing.T) {
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Append(1, 2, 3))
	hdr := *v
	for _, c := range []struct {
		name, want string
		f          func()
	}{
		{"At(-1)", "index out of range [-1] with length 3", func() { v.At(-1) }},
		{"At(3)", "index out of range [3] with length 3", func() { v.At(3) }},
		{"Insert(-1)", "index out of range [-1] with length 3", func() { _ = v.Insert(-1, 9) }},
		{"Insert(4)", "index out of range [4] with length 3", func() { _ = v.Insert(4, 9) }},
		{"Insert(4) of many", "index out of range [4] with length 3", func() { _ = v.Insert(4, make([]int64, 100)...) }},
		{"Delete(-1, 1)", "slice bounds out of range [-1:1] with length 3", func() { _ = v.Delete(-1, 1) }},
		{"Delete(2, 1)", "slice bounds out of range [2:1] with length 3", func() { _ = v.Delete(2, 1) }},
		{"Delete(1, 4)", "slice bounds out of range [1:4] with length 3", func() { _ = v.Delete(1, 4) }},
		{"Truncate(-1)", "out of range", func() { _ = v.Truncate(-1) }},
		{"Truncate(4)", "out of range", func() { _ = v.Truncate(4) }},
		{"Reserve(-1)", "negative", func() { _ = v.Reserve(-1) }},
		{"Resize(-1)", "negative", func() { _ = v.Resize(-1) }},
	} {
		r := outcome(c.f)
		require.NotNil(t, r, "%s did not panic", c.name)
		assert.Contains(t, fmt.Sprint(r), c.want, c.name)
		assert.Equal(t, hdr, *v, "%s left the vector as it was", c.name)
	}
	assert.Equal(t, []int64{1, 2, 3}, v.Slice())
	// No lane was left claimed: calls that take one still work.
	require.NoError(t, v.Insert(1, make([]int64, 100)...))
	require.NoError(t, v.Delete(0, 50))
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Vector[int64]](seg, "v"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// fillSegment allocates until nothing fits, at every size down to one
// byte, and returns a function that frees what it took.
func fillSegment(t *testing.T, seg *mapped.Segment) (release func()) {
	t.Helper()
	var blocks [][]byte
	for n := 1 << 16; n > 0; n -= max(n/8, 1) {
		for {
			b, err := seg.Allocate(n)
			if err != nil {
				require.ErrorIs(t, err, mapped.ErrNoSpace)
				break
			}
			blocks = append(blocks, b)
		}
	}
	return func() {
		for _, b := range blocks {
			require.NoError(t, seg.Deallocate(b))
		}
	}
}

// In a full fixed-size segment every call that needs a block is
// ErrNoSpace, and leaves its container (header and contents) and the
// segment's accounting exactly as they were.
func TestContainersNoSpaceLeaveThemUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "full.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(128<<10), mapped.WithFixedSize())
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()

	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	for v.Len() == 0 || v.Len() < v.Cap() {
		require.NoError(t, v.Append(int64(v.Len())))
	}
	s, err := Construct(seg, "s", String{})
	require.NoError(t, err)
	require.NoError(t, s.Set("a value long enough to live in a block of the segment"))
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := l.PushBack(int64(i))
		require.NoError(t, err)
	}
	people, err := Construct(seg, "people", Vector[record]{})
	require.NoError(t, err)
	require.NoError(t, people.Append(record{ID: 1}))
	tags := &people.At(0).Tags
	for tags.Len() == 0 || tags.Len() < tags.Cap() {
		require.NoError(t, tags.Append(String{}))
	}
	head, err := Construct(seg, "head", listNode{})
	require.NoError(t, err)

	release := fillSegment(t, seg)
	type state struct {
		v    Vector[int64]
		vals []int64
		s    String
		str  string
		l    List[int64]
		list []int64
		tags Vector[String]
		head listNode
		free int64
	}
	snap := func() state {
		st := state{v: *v, vals: slices.Clone(v.Slice()), s: *s, str: s.String(), l: *l, tags: *tags, head: *head, free: seg.FreeMemory()}
		for p := range l.All() {
			st.list = append(st.list, *p)
		}
		return st
	}
	before := snap()
	long := strings.Repeat("x", 4*s.Len())
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"Vector.Append one", func() error { return v.Append(-1) }},
		{"Vector.Append many", func() error { return v.Append(-1, -2, -3) }},
		{"Vector.Insert one", func() error { return v.Insert(0, -1) }},
		{"Vector.Insert many", func() error { return v.Insert(1, make([]int64, 40)...) }},
		{"Vector.Reserve", func() error { return v.Reserve(v.Cap() + 1) }},
		{"Vector.Resize", func() error { return v.Resize(v.Cap() + 1) }},
		{"String.Set growing", func() error { return s.Set(long) }},
		{"List.PushBack", func() error { _, err := l.PushBack(9); return err }},
		{"List.PushFront", func() error { _, err := l.PushFront(9); return err }},
		{"List.InsertAfter", func() error { _, err := l.InsertAfter(9, l.Front()); return err }},
		{"List.InsertBefore", func() error { _, err := l.InsertBefore(9, l.Back()); return err }},
		{"nested Vector[String].Append", func() error { return tags.Append(String{}) }},
		{"NewInto", func() error { _, err := NewInto(&head.Next); return err }},
	} {
		err := c.f()
		require.ErrorIs(t, err, mapped.ErrNoSpace, c.name)
		assert.Equal(t, before, snap(), "%s left everything as it was", c.name)
		require.NoError(t, seg.CheckSanity(), c.name)
	}

	// With room again, the same calls work.
	release()
	require.NoError(t, v.Append(-1, -2, -3))
	require.NoError(t, s.Set(long))
	_, err = l.PushBack(9)
	require.NoError(t, err)
	require.NoError(t, tags.Append(String{}))
	_, err = NewInto(&head.Next)
	require.NoError(t, err)
	require.NoError(t, Delete(seg, head.Next.Get()))
	for _, err := range []error{
		Destroy[Vector[int64]](seg, "v"), Destroy[String](seg, "s"), Destroy[List[int64]](seg, "l"),
		Destroy[Vector[record]](seg, "people"), Destroy[listNode](seg, "head"),
	} {
		require.NoError(t, err)
	}
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

// Every method of a container copied to Go memory, or left behind by a
// closed segment, panics with the documented message instead of reading
// the wrong memory.
func TestContainerCopiesPanicOnEveryMethod(t *testing.T) {
	panicOnFault(t)
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Append(1, 2, 3))
	s, err := Construct(seg, "s", String{})
	require.NoError(t, err)
	require.NoError(t, s.Set("a value long enough to live in a block of the segment"))
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	_, err = l.PushBack(1)
	require.NoError(t, err)
	_, err = l.PushBack(2)
	require.NoError(t, err)
	head, err := Construct(seg, "head", listNode{})
	require.NoError(t, err)
	_, err = NewInto(&head.Next)
	require.NoError(t, err)

	calls := func(v *Vector[int64], s *String, l *List[int64], e *ListElement[int64], p *Ptr[listNode], mark *ListElement[int64]) map[string]func() {
		return map[string]func(){
			"Vector.Len":   func() { v.Len() },
			"Vector.Cap":   func() { v.Cap() },
			"Vector.At":    func() { v.At(0) },
			"Vector.Slice": func() { v.Slice() },
			"Vector.All": func() {
				for range v.All() {
				}
			},
			"Vector.Append":      func() { _ = v.Append(4) },
			"Vector.Append many": func() { _ = v.Append(4, 5) },
			"Vector.Insert":      func() { _ = v.Insert(0, 4) },
			"Vector.Delete":      func() { _ = v.Delete(0, 1) },
			"Vector.Truncate":    func() { _ = v.Truncate(0) },
			"Vector.Resize":      func() { _ = v.Resize(10) },
			"Vector.Reserve":     func() { _ = v.Reserve(10) },
			"Vector.Clear":       func() { _ = v.Clear() },
			"String.Set":         func() { _ = s.Set("x") },
			"String.Set long":    func() { _ = s.Set(strings.Repeat("x", 100)) },
			"String.String":      func() { _ = s.String() },
			"String.Len":         func() { s.Len() },
			"String.Bytes":       func() { s.Bytes() },
			"String.Equal":       func() { s.Equal("x") },
			"String.Compare":     func() { s.Compare("x") },
			"List.Len":           func() { l.Len() },
			"List.Front":         func() { l.Front() },
			"List.Back":          func() { l.Back() },
			"List.All": func() {
				for range l.All() {
				}
			},
			"List.PushBack":     func() { _, _ = l.PushBack(3) },
			"List.PushFront":    func() { _, _ = l.PushFront(3) },
			"List.InsertAfter":  func() { _, _ = l.InsertAfter(3, mark) },
			"List.InsertBefore": func() { _, _ = l.InsertBefore(3, mark) },
			"List.Remove":       func() { _ = l.Remove(mark) },
			"ListElement.Next":  func() { e.Next() },
			"ListElement.Prev":  func() { e.Prev() },
			"Ptr.Get":           func() { p.Get() },
			"NewInto":           func() { _, _ = NewInto(p) },
		}
	}
	vc, sc, lc, ec, pc := *v, *s, *l, *l.Front().Next(), head.Next
	for name, f := range calls(&vc, &sc, &lc, &ec, &pc, l.Front()) {
		r := outcome(f)
		require.NotNil(t, r, "%s on a copy in Go memory did not panic", name)
		assert.Contains(t, fmt.Sprint(r), "not inside any open segment", name)
	}
	require.NoError(t, seg.CheckSanity())
	assert.Equal(t, []int64{1, 2, 3}, v.Slice(), "the copies changed nothing")

	// The same pointers once their segment is closed.
	e, mark := l.Front().Next(), l.Front()
	require.NoError(t, seg.Close())
	for name, f := range calls(v, s, l, e, &head.Next, mark) {
		r := outcome(f)
		require.NotNil(t, r, "%s in a closed segment did not panic", name)
		assert.Contains(t, fmt.Sprint(r), "not inside any open segment", name)
	}
}

// A segment opened read-only: every mutating method of every container
// is mapped.ErrReadOnly (none writes: a write would fault), and the
// readers work.
func TestContainersReadOnlyEveryMethod(t *testing.T) {
	panicOnFault(t)
	path := filepath.Join(t.TempDir(), "ro.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Append(1, 2, 3))
	full, err := Construct(seg, "full", Vector[int64]{})
	require.NoError(t, err)
	for full.Len() == 0 || full.Len() < full.Cap() {
		require.NoError(t, full.Append(7))
	}
	s, err := Construct(seg, "s", String{})
	require.NoError(t, err)
	require.NoError(t, s.Set("a value long enough to live in a block of the segment"))
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := l.PushBack(int64(i))
		require.NoError(t, err)
	}
	people, err := Construct(seg, "people", Vector[record]{})
	require.NoError(t, err)
	require.NoError(t, people.Append(record{ID: 1}))
	require.NoError(t, people.At(0).Name.Set("someone with a long enough name"))
	_, err = Construct(seg, "head", listNode{})
	require.NoError(t, err)
	require.NoError(t, seg.Close())

	ro, err := mapped.Open(file.Path(path), mapped.OpenReadOnly)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ro.Close() })
	v, err = Find[Vector[int64]](ro, "v")
	require.NoError(t, err)
	full, err = Find[Vector[int64]](ro, "full")
	require.NoError(t, err)
	s, err = Find[String](ro, "s")
	require.NoError(t, err)
	l, err = Find[List[int64]](ro, "l")
	require.NoError(t, err)
	people, err = Find[Vector[record]](ro, "people")
	require.NoError(t, err)
	head, err := Find[listNode](ro, "head")
	require.NoError(t, err)
	p := people.At(0)

	for name, f := range map[string]func() error{
		"Vector.Append within capacity": func() error { return v.Append(4) },
		"Vector.Append growing":         func() error { return full.Append(4) },
		"Vector.Append many":            func() error { return v.Append(4, 5) },
		"Vector.Insert":                 func() error { return v.Insert(0, 4) },
		"Vector.Insert at the end":      func() error { return v.Insert(3, 4) },
		"Vector.Insert many":            func() error { return v.Insert(1, make([]int64, 40)...) },
		"Vector.Delete":                 func() error { return v.Delete(0, 1) },
		"Vector.Delete empty range":     func() error { return v.Delete(1, 1) },
		"Vector.Truncate":               func() error { return v.Truncate(1) },
		"Vector.Resize smaller":         func() error { return v.Resize(1) },
		"Vector.Resize larger":          func() error { return v.Resize(100) },
		"Vector.Reserve":                func() error { return v.Reserve(100) },
		"Vector.Clear":                  func() error { return v.Clear() },
		"String.Set inline":             func() error { return s.Set("x") },
		"String.Set in the block":       func() error { return s.Set("another value, still long") },
		"String.Set growing":            func() error { return s.Set(strings.Repeat("y", 300)) },
		"List.PushBack":                 func() error { _, err := l.PushBack(9); return err },
		"List.PushFront":                func() error { _, err := l.PushFront(9); return err },
		"List.InsertAfter":              func() error { _, err := l.InsertAfter(9, l.Front()); return err },
		"List.InsertBefore":             func() error { _, err := l.InsertBefore(9, l.Back()); return err },
		"List.Remove":                   func() error { return l.Remove(l.Front()) },
		"nested String.Set":             func() error { return p.Name.Set("new name, long as well") },
		"nested Vector.Append":          func() error { return p.Tags.Append(String{}) },
		"Vector[record].Delete":         func() error { return people.Delete(0, 1) },
		"NewInto":                       func() error { _, err := NewInto(&head.Next); return err },
		"Destroy":                       func() error { return Destroy[Vector[record]](ro, "people") },
		"Delete":                        func() error { return Delete(ro, l.Front().Value()) },
	} {
		var err error
		r := outcome(func() { err = f() })
		require.Nil(t, r, "%s panicked", name)
		assert.ErrorIs(t, err, mapped.ErrReadOnly, name)
	}
	assert.Equal(t, []int64{1, 2, 3}, v.Slice())
	assert.Equal(t, "a value long enough to live in a block of the segment", s.String())
	var got []int64
	for q := range l.All() {
		got = append(got, *q)
	}
	assert.Equal(t, []int64{0, 1, 2}, got)
	assert.Equal(t, "someone with a long enough name", p.Name.String())
	assert.True(t, head.Next.IsNil())
}

// corruptOutcome runs f, which calls a container whose header is
// garbage: it must return an error wrapping mapped.ErrCorrupt or panic
// with one; anything else (a fault made a panic, a misuse panic, success)
// fails.
func corruptOutcome(t *testing.T, name string, f func() error) {
	t.Helper()
	var err error
	r := outcome(func() { err = f() })
	if r != nil {
		perr, ok := r.(error)
		require.True(t, ok, "%s panicked with %v, not an error", name, r)
		require.ErrorIs(t, perr, mapped.ErrCorrupt, "%s panicked with %v", name, perr)
		assert.NotContains(t, perr.Error(), "runtime error", name)
		return
	}
	require.ErrorIs(t, err, mapped.ErrCorrupt, "%s on a garbage header", name)
}

// The header words of a container overwritten with garbage (out of the
// segment, misaligned, lengths beyond capacities, capacities beyond the
// segment): every method reports mapped.ErrCorrupt, by error or by a
// panic carrying it, and nothing faults.
func TestContainersGarbageHeaders(t *testing.T) {
	panicOnFault(t)
	seg := newSeg(t)
	size := uint64(seg.Size())
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Append(1, 2, 3))
	s, err := Construct(seg, "s", String{})
	require.NoError(t, err)
	require.NoError(t, s.Set("a value long enough to live in a block of the segment"))
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := l.PushBack(int64(i))
		require.NoError(t, err)
	}
	vw := (*[3]uint64)(unsafe.Pointer(v))
	sw := (*[3]uint64)(unsafe.Pointer(s))
	lw := (*[3]uint64)(unsafe.Pointer(l))
	vGood, sGood, lGood := *vw, *sw, *lw
	rng := rand.New(rand.NewPCG(13, 13))

	// Vector: data, length, capacity.
	vBad := [][3]uint64{
		{1 << 62, 2, 4},                    // storage far outside
		{size - 8, 2, 100},                 // storage running past the end
		{vGood[0] + 1, 2, vGood[2]},        // misaligned
		{vGood[0], vGood[2] + 1, vGood[2]}, // length beyond capacity
		{vGood[0], 3, 1 << 39},             // capacity beyond the segment
		{vGood[0], 3, 1<<64 - 1},           // capacity that overflows a byte count
		{^uint64(0), ^uint64(0), ^uint64(0)},
	}
	for range 20 {
		vBad = append(vBad, [3]uint64{rng.Uint64() | 1<<40, rng.Uint64(), rng.Uint64()})
	}
	for k, bad := range vBad {
		*vw = bad
		for name, f := range map[string]func() error{
			"Len":   func() error { v.Len(); return nil },
			"Cap":   func() error { v.Cap(); return nil },
			"At":    func() error { v.At(0); return nil },
			"Slice": func() error { v.Slice(); return nil },
			"All": func() error {
				for range v.All() {
				}
				return nil
			},
			"Append":      func() error { return v.Append(9) },
			"Append many": func() error { return v.Append(9, 10) },
			"Insert":      func() error { return v.Insert(0, 9) },
			"Delete":      func() error { return v.Delete(0, 1) },
			"Truncate":    func() error { return v.Truncate(0) },
			"Resize":      func() error { return v.Resize(1) },
			"Reserve":     func() error { return v.Reserve(1000) },
			"Clear":       func() error { return v.Clear() },
		} {
			corruptOutcome(t, fmt.Sprintf("Vector.%s with header %d %x", name, k, bad), f)
		}
	}
	*vw = vGood
	assert.Equal(t, []int64{1, 2, 3}, v.Slice())

	// String: the value word, the block, the half size.
	sBad := [][3]uint64{
		{1<<63 | 100<<56, 0, 0},            // inline, longer than the word
		{sGood[0], 1 << 62, sGood[2]},      // block far outside
		{sGood[0], size - 16, sGood[2]},    // block running past the end
		{sGood[2] + 1, sGood[1], sGood[2]}, // length beyond the half
		{sGood[0], sGood[1], size},         // halves beyond the segment
	}
	for range 20 {
		sBad = append(sBad, [3]uint64{rng.Uint64()&^(1<<63) | 1, rng.Uint64() | 1<<40, rng.Uint64()})
	}
	for k, bad := range sBad {
		*sw = bad
		for name, f := range map[string]func() error{
			"String":  func() error { _ = s.String(); return nil },
			"Len":     func() error { s.Len(); return nil },
			"Bytes":   func() error { s.Bytes(); return nil },
			"Equal":   func() error { s.Equal("x"); return nil },
			"Compare": func() error { s.Compare("x"); return nil },
		} {
			corruptOutcome(t, fmt.Sprintf("String.%s with header %d %x", name, k, bad), f)
		}
		if bad[1] != sGood[1] && bad[1] != 0 {
			// A value that fits the (garbage) block must not be written
			// through it.
			corruptOutcome(t, fmt.Sprintf("String.Set with header %d %x", k, bad), func() error { return s.Set("eight or more bytes") })
		}
	}
	*sw = sGood
	assert.Equal(t, "a value long enough to live in a block of the segment", s.String())

	// List: first and last element, length.
	lBad := [][3]uint64{
		{1 << 62, lGood[1], 3},
		{lGood[0], 1 << 62, 3},
		{lGood[0] + 4, lGood[1], 3}, // misaligned
		{size - 8, size - 8, 3},     // an element running past the end
	}
	for range 20 {
		lBad = append(lBad, [3]uint64{rng.Uint64() | 1<<40, rng.Uint64() | 1<<40, rng.Uint64()})
	}
	for k, bad := range lBad {
		*lw = bad
		// (A call that needs only the word left good may succeed.)
		calls := map[string]func() error{}
		if bad[0] != lGood[0] {
			calls["Front"] = func() error { l.Front(); return nil }
			calls["All"] = func() error {
				for range l.All() {
				}
				return nil
			}
			calls["PushFront"] = func() error { _, err := l.PushFront(9); return err }
		}
		if bad[1] != lGood[1] {
			calls["Back"] = func() error { l.Back(); return nil }
			calls["PushBack"] = func() error { _, err := l.PushBack(9); return err }
		}
		for name, f := range calls {
			corruptOutcome(t, fmt.Sprintf("List.%s with header %d %x", name, k, bad), f)
		}
	}
	*lw = lGood
	// An element's links: next and previous.
	mid := l.Front().Next()
	ew := (*[2]uint64)(unsafe.Pointer(mid))
	eGood := *ew
	for k, bad := range [][2]uint64{{1 << 62, eGood[1]}, {eGood[0], 1 << 62}, {eGood[0] + 1, eGood[1]}, {eGood[0], size}} {
		*ew = bad
		calls := map[string]func() error{}
		if bad[0] != eGood[0] {
			calls["Next"] = func() error { mid.Next(); return nil }
			calls["InsertAfter"] = func() error { _, err := l.InsertAfter(9, mid); return err }
			calls["Remove"] = func() error { return l.Remove(mid) }
		}
		if bad[1] != eGood[1] {
			calls["Prev"] = func() error { mid.Prev(); return nil }
			calls["InsertBefore"] = func() error { _, err := l.InsertBefore(9, mid); return err }
			calls["Remove"] = func() error { return l.Remove(mid) }
		}
		for name, f := range calls {
			corruptOutcome(t, fmt.Sprintf("ListElement.%s with links %d %x", name, k, bad), f)
		}
	}
	*ew = eGood
	var got []int64
	for p := range l.All() {
		got = append(got, *p)
	}
	assert.Equal(t, []int64{0, 1, 2}, got)

	// Restored, everything is as it was and destroys cleanly.
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Vector[int64]](seg, "v"))
	require.NoError(t, Destroy[String](seg, "s"))
	require.NoError(t, Destroy[List[int64]](seg, "l"))
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
}
