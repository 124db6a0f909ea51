package objects

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// The records of checked word-format tables (hashlook.go): made by a Get,
// used by the next, replaced when the table changes, never allocated on
// every Get when two maps share a slot, and dropped when the segment
// closes.

// lookOf is h's record, or nil.
func lookOf[V any](h *HashMap[uint64, V]) *wordLook {
	e := wordLooks[wordLookSlot(unsafe.Pointer(h))].Load()
	if e == nil || e.h != uintptr(unsafe.Pointer(h)) {
		return nil
	}
	return e
}

// wordMapOf constructs the HashMap[uint64, float64] "h" in seg, holding
// k -> k for k from 1 to n.
func wordMapOf(t *testing.T, seg *mapped.Segment, n uint64) *HashMap[uint64, float64] {
	t.Helper()
	h, err := Construct(seg, "h", HashMap[uint64, float64]{})
	require.NoError(t, err)
	for k := uint64(1); k <= n; k++ {
		require.NoError(t, h.Set(k, float64(k)))
	}
	return h
}

func TestWordLookRecordIsUsedAndFollowsTheTable(t *testing.T) {
	seg := newSeg(t)
	h := wordMapOf(t, seg, 100)
	v, ok := h.Get(7)
	require.True(t, ok)
	require.Equal(t, 7.0, *v)
	e := lookOf(h)
	require.NotNil(t, e, "a Get records the table it checked")
	assert.Equal(t, h.table, e.t)
	assert.Equal(t, h.groups, e.n)

	// The next Get goes by the record: one that points elsewhere (a copy
	// of the table with one value changed, in the segment) is followed.
	n, slot := h.groups, uint64(16)
	c, err := seg.Allocate(int(n * slot))
	require.NoError(t, err)
	copy(c, unsafe.Slice((*byte)(e.data), n*slot))
	at := hwAt(t, h, 7)
	*(*float64)(unsafe.Pointer(&c[at*slot+8])) = -7
	fake := *e
	fake.data = unsafe.Pointer(&c[0])
	wordLooks[wordLookSlot(unsafe.Pointer(h))].Store(&fake)
	v, ok = h.Get(7)
	require.True(t, ok)
	assert.Equal(t, -7.0, *v, "Get read the table the record names")
	wordLooks[wordLookSlot(unsafe.Pointer(h))].Store(e)
	require.NoError(t, seg.Deallocate(c))

	// Inserts rebuild the table elsewhere: the record no longer matches
	// the header, and the next Get checks and records the new table.
	old := h.table
	for k := uint64(101); k <= 5000; k++ {
		require.NoError(t, h.Set(k, float64(k)))
	}
	require.NotEqual(t, old, h.table)
	for k := uint64(1); k <= 5000; k++ {
		v, ok := h.Get(k)
		require.True(t, ok, "key %d", k)
		require.Equal(t, float64(k), *v)
	}
	e = lookOf(h)
	require.NotNil(t, e)
	assert.Equal(t, h.table, e.t)

	// Removals change the table in place: a Get by the record sees them.
	for k := uint64(1); k <= 5000; k += 2 {
		ok, err := h.Delete(k)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for k := uint64(1); k <= 5000; k++ {
		_, ok := h.Get(k)
		require.Equal(t, k%2 == 0, ok, "key %d", k)
	}

	// Keys 0 and wordTomb, kept in the table's head, are found with a
	// record present, and asking for them allocates no record.
	require.NoError(t, h.Set(0, 0.5))
	require.NoError(t, h.Set(wordTomb, 1.5))
	h.Get(2)
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		if v, ok := h.Get(0); !ok || *v != 0.5 {
			panic("key 0")
		}
		if v, ok := h.Get(wordTomb); !ok || *v != 1.5 {
			panic("key wordTomb")
		}
		if v, ok := h.Get(2); !ok || *v != 2 {
			panic("key 2")
		}
	}))
	require.NoError(t, Destroy[HashMap[uint64, float64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// After the header changes under a record (here by hand: another table
// offset, or the same offset with another slot count), Get answers as
// the checking way does, a panic included.
func TestWordLookFollowsTheHeader(t *testing.T) {
	type answer struct {
		v      float64
		ok     bool
		panics bool
	}
	ask := func(f func() (*float64, bool)) (a answer) {
		defer func() { a.panics = recover() != nil }()
		v, ok := f()
		if ok {
			a.v = *v
		}
		return answer{v: a.v, ok: ok}
	}
	for _, c := range []struct {
		name string
		edit func(t *testing.T, seg *mapped.Segment, h *HashMap[uint64, float64])
	}{
		{"half the slots", func(t *testing.T, seg *mapped.Segment, h *HashMap[uint64, float64]) {
			h.groups /= 2
		}},
		{"a copy elsewhere", func(t *testing.T, seg *mapped.Segment, h *HashMap[uint64, float64]) {
			size := int(wordBytes(h.groups, 16))
			c, err := seg.AllocateAligned(size, 64)
			require.NoError(t, err)
			old := unsafe.Slice((*byte)(unsafe.Add(seg.Base(), h.table)), size)
			copy(c, old)
			data := wordData(h.table, 16) - h.table
			for i := uint64(0); i < h.groups; i++ {
				if v := (*float64)(unsafe.Pointer(&c[data+i*16+8])); *v > 0 {
					*v = -*v
				}
			}
			h.table = uint64(uintptr(unsafe.Pointer(&c[0])) - uintptr(seg.Base()))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			seg := newSeg(t)
			h, err := Construct(seg, "h", HashMap[uint64, float64]{})
			require.NoError(t, err)
			for k := uint64(1); k <= 40; k++ {
				require.NoError(t, h.Set(k*7919, float64(k)))
			}
			_, ok := h.Get(7919)
			require.True(t, ok)
			require.NotNil(t, lookOf(h))
			c.edit(t, seg, h)
			differ := 0
			for k := uint64(1); k <= 40; k++ {
				want := ask(func() (*float64, bool) { return h.get(k * 7919) })
				got := ask(func() (*float64, bool) { return h.Get(k * 7919) })
				require.Equal(t, want, got, "key %d", k*7919)
				if !want.ok || want.v != float64(k) {
					differ++
				}
			}
			assert.NotZero(t, differ, "the edit changes some answers")
		})
	}
}

// A record is for one type: the same header read as a map of larger
// values (as a map constructed where a destroyed one was, whose table got
// the same offset and slot count, would be) is checked afresh.
func TestWordLookIsPerType(t *testing.T) {
	seg := newSeg(t)
	h := wordMapOf(t, seg, 40)
	_, ok := h.Get(1)
	require.True(t, ok)
	require.NotNil(t, lookOf(h))
	wide := (*HashMap[uint64, [56]byte])(unsafe.Pointer(h))
	for k := uint64(1); k <= 40; k++ {
		want, wok := wide.get(k)
		got, gok := wide.Get(k)
		require.Equal(t, wok, gok, "key %d", k)
		require.Equal(t, want, got, "key %d", k)
	}
}

// A record is for one header: two segments built alike hold their maps'
// tables at the same offsets, and one's record, found in the slot of the
// other's map, is not taken for it.
func TestWordLookIsPerHeader(t *testing.T) {
	build := func(add float64) *HashMap[uint64, float64] {
		seg := newSeg(t)
		h, err := Construct(seg, "h", HashMap[uint64, float64]{})
		require.NoError(t, err)
		for k := uint64(1); k <= 40; k++ {
			require.NoError(t, h.Set(k, float64(k)+add))
		}
		return h
	}
	a, b := build(0), build(0.5)
	require.Equal(t, a.table, b.table, "built alike")
	require.Equal(t, a.groups, b.groups)
	_, ok := a.Get(1)
	require.True(t, ok)
	e := lookOf(a)
	require.NotNil(t, e)
	wordLooks[wordLookSlot(unsafe.Pointer(b))].Store(e)
	for k := uint64(1); k <= 40; k++ {
		v, ok := b.Get(k)
		require.True(t, ok)
		require.Equal(t, float64(k)+0.5, *v, "key %d", k)
	}
}

// hwAt is the slot that holds k.
func hwAt(t *testing.T, h *HashMap[uint64, float64], k uint64) uint64 {
	t.Helper()
	o := hmOp(t, h)
	at, found, _ := o.wordFind(k)
	require.True(t, found)
	return at
}

// Two maps whose headers share a record slot, used in turn: most Gets go
// the checking way, but not one record is allocated per Get.
func TestWordLookSharedSlotDoesNotAllocateEachGet(t *testing.T) {
	seg := newSeg(t)
	first := map[uintptr]*HashMap[uint64, float64]{}
	var a, b *HashMap[uint64, float64]
	for i := 0; a == nil; i++ {
		require.Less(t, i, 5000, "no two headers share a slot")
		h, err := Construct(seg, fmt.Sprintf("h%d", i), HashMap[uint64, float64]{})
		require.NoError(t, err)
		require.NoError(t, h.Set(1, float64(i)))
		s := wordLookSlot(unsafe.Pointer(h))
		if o, ok := first[s]; ok {
			a, b = o, h
		}
		first[s] = h
	}
	get := func() {
		if _, ok := a.Get(1); !ok {
			panic("a")
		}
		if _, ok := b.Get(1); !ok {
			panic("b")
		}
	}
	get()
	assert.Less(t, testing.AllocsPerRun(200, get), 1.0)
}

// Close drops the segment's records, so that nothing keeps it (and its
// address range) once it is garbage.
func TestWordLookDroppedAtClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "look.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	h, err := Construct(seg, "h", HashMap[uint64, float64]{})
	require.NoError(t, err)
	require.NoError(t, h.Set(3, 3))
	_, ok := h.Get(3)
	require.True(t, ok)
	require.NotNil(t, lookOf(h))
	require.NoError(t, seg.Close())
	for i := range wordLooks {
		if e := wordLooks[i].Load(); e != nil {
			assert.NotSame(t, seg, e.seg, "slot %d", i)
		}
	}
	assert.Panics(t, func() { h.Get(3) }, "a map of a closed segment")
}

// Goroutines finding keys in maps of one segment, whose records share
// slots, while another opens, uses and closes other segments (whose
// Close drops records): every answer is right (and -race sees the
// records published and read safely).
func TestWordLookConcurrentGets(t *testing.T) {
	seg, err := mapped.Open(file.Path(filepath.Join(t.TempDir(), "c.seg")), mapped.CreateOnly, mapped.WithSize(8<<20))
	require.NoError(t, err)
	defer seg.Close()
	// Four maps, then more until one shares a record slot with an earlier
	// one; the maps used are the first four and that pair.
	var all []*HashMap[uint64, float64]
	bySlot := map[uintptr]int{}
	pair := -1
	for i := 0; pair < 0 || len(all) < 4; i++ {
		require.Less(t, i, 5000, "no two headers share a slot")
		h, err := Construct(seg, fmt.Sprintf("h%d", i), HashMap[uint64, float64]{})
		require.NoError(t, err)
		all = append(all, h)
		s := wordLookSlot(unsafe.Pointer(h))
		if j, ok := bySlot[s]; ok && pair < 0 {
			pair = j
		}
		bySlot[s] = i
	}
	maps := all[:4:4]
	for _, h := range []*HashMap[uint64, float64]{all[pair], all[len(all)-1]} {
		if !slices.Contains(maps, h) {
			maps = append(maps, h)
		}
	}
	for i, h := range maps {
		for k := uint64(1); k <= 200; k++ {
			require.NoError(t, h.Set(k, float64(k)+float64(i)/10))
		}
	}
	dir := t.TempDir()
	stop := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		churned <- func() error {
			for r := 0; ; r++ {
				select {
				case <-stop:
					return nil
				default:
				}
				other, err := mapped.Open(file.Path(filepath.Join(dir, fmt.Sprintf("o%d.seg", r))), mapped.CreateOnly, mapped.WithSize(1<<20))
				if err != nil {
					return err
				}
				h, err := Construct(other, "h", HashMap[uint64, float64]{})
				if err == nil {
					err = h.Set(5, 5)
				}
				if err == nil {
					if v, ok := h.Get(5); !ok || *v != 5 {
						err = fmt.Errorf("round %d: key 5 of the other segment", r)
					}
				}
				if cerr := other.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
		}()
	}()
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			errs <- func() error {
				for r := range 3000 {
					i := (g + r) % len(maps)
					k := uint64(r%200 + 1)
					v, ok := maps[i].Get(k)
					if !ok || *v != float64(k)+float64(i)/10 {
						return fmt.Errorf("goroutine %d: map %d key %d", g, i, k)
					}
				}
				return nil
			}()
		}()
	}
	for range 4 {
		assert.NoError(t, <-errs)
	}
	close(stop)
	assert.NoError(t, <-churned)
}
