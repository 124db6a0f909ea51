package mapped

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
)

func u64spec(n int64) NameSpec {
	return NameSpec{Count: n, ElemSize: 8, Align: 8, Layout: []byte("u64")}
}

func TestNameDirectory(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		free0 := s.FreeMemory()
		n, err := s.CreateNamed("answer", false, u64spec(3), func(obj []byte) {
			for i := 0; i < 3; i++ {
				binary.LittleEndian.PutUint64(obj[i*8:], uint64(42+i))
			}
		})
		require.NoError(t, err)
		assert.Equal(t, int64(3), n.Count)
		assert.Len(t, n.Obj, 24)
		assert.Equal(t, "u64", string(n.Layout))

		_, err = s.CreateNamed("answer", false, u64spec(1), func(obj []byte) { obj[0] = 9 })
		require.ErrorIs(t, err, ErrExists)
		got, err := s.LookupNamed("answer", false)
		require.NoError(t, err)
		assert.Equal(t, uint64(42), binary.LittleEndian.Uint64(got.Obj), "a failed create leaves the object untouched")
		assert.Equal(t, n.Handle, got.Handle)

		_, err = s.LookupNamed("answer", true)
		require.ErrorIs(t, err, ErrNotFound, "the unique namespace is separate")
		_, err = s.CreateNamed("answer", true, u64spec(1), nil)
		require.NoError(t, err)
		assert.Equal(t, 2, s.NamedCount())

		for _, bad := range []string{"", strings.Repeat("x", MaxNameLen+1), "a\x00b"} {
			_, err := s.CreateNamed(bad, false, u64spec(1), nil)
			require.ErrorIs(t, err, ErrInvalidName)
		}
		_, err = s.CreateNamed("neg", false, NameSpec{Count: -1, ElemSize: 8}, nil)
		require.ErrorIs(t, err, ErrInvalidSize)
		_, err = s.CreateNamed("ovf", false, NameSpec{Count: 1 << 62, ElemSize: 8}, nil)
		require.ErrorIs(t, err, ErrInvalidSize)

		err = s.RemoveNamed("answer", false, func(Named) error { return fmt.Errorf("no") })
		require.EqualError(t, err, "no")
		_, err = s.LookupNamed("answer", false)
		require.NoError(t, err, "a refused remove keeps the name")
		require.NoError(t, s.RemoveNamed("answer", false, nil))
		require.ErrorIs(t, s.RemoveNamed("answer", false, nil), ErrNotFound)
		require.NoError(t, s.RemoveNamed("answer", true, nil))
		require.NoError(t, s.CheckSanity())
		assert.Equal(t, 0, s.NamedCount())

		// Many names: the index is rebuilt several times.
		rng := rand.New(rand.NewPCG(5, 6))
		names := map[string]uint64{}
		for i := 0; i < 5000; i++ {
			name := fmt.Sprintf("obj_%d", rng.IntN(3000))
			if v, ok := names[name]; ok && rng.IntN(2) == 0 {
				got, err := s.LookupNamed(name, false)
				require.NoError(t, err)
				require.Equal(t, v, binary.LittleEndian.Uint64(got.Obj))
				require.NoError(t, s.RemoveNamed(name, false, nil))
				delete(names, name)
				continue
			}
			v := rng.Uint64()
			_, err := s.CreateNamed(name, false, u64spec(1), func(obj []byte) { binary.LittleEndian.PutUint64(obj, v) })
			if _, ok := names[name]; ok {
				require.ErrorIs(t, err, ErrExists)
				continue
			}
			require.NoError(t, err)
			names[name] = v
		}
		require.NoError(t, s.CheckSanity())
		assert.Equal(t, len(names), s.NamedCount())
		seen := 0
		for n := range s.NamedObjects() {
			require.Equal(t, names[n.Name], binary.LittleEndian.Uint64(n.Obj), n.Name)
			seen++
		}
		assert.Equal(t, len(names), seen)
		for name := range names {
			require.NoError(t, s.RemoveNamed(name, false, nil))
		}
		require.NoError(t, s.CheckSanity())
		// The last name took the index with it.
		assert.Zero(t, s.h.get(mDirTable))
		assert.Equal(t, free0, s.FreeMemory())
		assert.True(t, s.AllMemoryDeallocated())
	})
}

func TestWideSizesRecord(t *testing.T) {
	// Counts or element sizes of 2^32 or more take the record's wide
	// header; zero-byte objects keep the test small.
	s := newShmSeg(t, WithSize(1<<20))
	free0 := s.FreeMemory()
	specs := map[string]NameSpec{
		"many":   {Count: 1 << 40, ElemSize: 0, Align: 16, Layout: []byte("zero-size elements")},
		"huge":   {Count: 0, ElemSize: 1<<32 + 5, Layout: []byte("h")},
		"narrow": {Count: 1<<32 - 1, ElemSize: 0},
	}
	for name, spec := range specs {
		_, err := s.CreateNamed(name, false, spec, nil)
		require.NoError(t, err, name)
	}
	require.NoError(t, s.CheckSanity())
	for name, spec := range specs {
		n, err := s.LookupNamed(name, false)
		require.NoError(t, err, name)
		assert.Equal(t, spec.Count, n.Count, name)
		assert.Equal(t, spec.ElemSize, n.ElemSize, name)
		assert.Equal(t, string(spec.Layout), string(n.Layout), name)
		assert.Empty(t, n.Obj, name)
		if spec.Align != 0 {
			assert.Equal(t, spec.Align, n.Align, name)
			assert.Zero(t, uintptr(unsafe.Pointer(unsafe.SliceData(n.Obj)))%uintptr(spec.Align), name)
		}
		obj, count, exact, err := s.LookupNamedAs(name, false, spec.Layout)
		require.NoError(t, err, name)
		assert.True(t, exact, name)
		assert.Equal(t, spec.Count, count, name)
		assert.Equal(t, unsafe.Pointer(unsafe.SliceData(n.Obj)), obj, name)
	}
	for name := range specs {
		require.NoError(t, s.RemoveNamed(name, false, nil))
	}
	assert.Equal(t, free0, s.FreeMemory())
}

func TestLookupNamedAs(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		n, err := s.CreateNamed("counter", false, u64spec(2), func(obj []byte) { obj[0] = 7 })
		require.NoError(t, err)
		_, err = s.CreateNamed("counter", true, NameSpec{Count: 1, ElemSize: 8, Layout: []byte("other")}, nil)
		require.NoError(t, err)

		obj, count, exact, err := s.LookupNamedAs("counter", false, []byte("u64"))
		require.NoError(t, err)
		assert.True(t, exact)
		assert.Equal(t, int64(2), count)
		assert.Equal(t, unsafe.Pointer(&n.Obj[0]), obj)
		assert.Equal(t, byte(7), *(*byte)(obj))

		for _, want := range [][]byte{[]byte("u32"), []byte("u6"), []byte("u64 "), nil, []byte("a layout of more than sixteen bytes")} {
			obj, count, exact, err = s.LookupNamedAs("counter", false, want)
			require.NoError(t, err)
			assert.False(t, exact, "%q", want)
			assert.Equal(t, unsafe.Pointer(&n.Obj[0]), obj, "the object is still returned")
			assert.Equal(t, int64(2), count)
		}
		_, _, exact, err = s.LookupNamedAs("counter", true, []byte("other"))
		require.NoError(t, err)
		assert.True(t, exact, "the unique namespace has its own record")

		obj, _, _, err = s.LookupNamedAs("absent", false, []byte("u64"))
		require.ErrorIs(t, err, ErrNotFound)
		assert.Contains(t, err.Error(), `"absent"`)
		assert.Nil(t, obj)

		allocs := testing.AllocsPerRun(100, func() {
			if _, _, _, err := s.LookupNamedAs("counter", false, []byte("u64")); err != nil {
				t.Fatal(err)
			}
		})
		assert.Zero(t, allocs)
		require.NoError(t, s.Close())
		_, _, _, err = s.LookupNamedAs("counter", false, []byte("u64"))
		require.ErrorIs(t, err, ErrClosed)
	})
}

func TestRemoveNamedAs(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		free0 := s.FreeMemory()
		_, err := s.CreateNamed("keep", false, u64spec(1), func(obj []byte) { obj[0] = 5 })
		require.NoError(t, err)
		_, err = s.CreateNamed("gone", false, u64spec(1), nil)
		require.NoError(t, err)

		removed, err := s.RemoveNamedAs("keep", false, []byte("u32"))
		require.NoError(t, err)
		assert.False(t, removed, "another layout is not removed")
		n, err := s.LookupNamed("keep", false)
		require.NoError(t, err)
		assert.Equal(t, byte(5), n.Obj[0], "and stays whole")

		removed, err = s.RemoveNamedAs("gone", false, []byte("u64"))
		require.NoError(t, err)
		assert.True(t, removed)
		_, err = s.LookupNamed("gone", false)
		require.ErrorIs(t, err, ErrNotFound)

		removed, err = s.RemoveNamedAs("gone", false, []byte("u64"))
		require.ErrorIs(t, err, ErrNotFound)
		assert.False(t, removed)
		_, err = s.RemoveNamedAs("keep", true, []byte("u64"))
		require.ErrorIs(t, err, ErrNotFound, "the unique namespace is separate")

		require.NoError(t, s.CheckSanity())
		removed, err = s.RemoveNamedAs("keep", false, []byte("u64"))
		require.NoError(t, err)
		assert.True(t, removed)
		assert.Equal(t, free0, s.FreeMemory())
	})
}

func TestLookupDoesNotAllocate(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly)
	_, err := s.CreateNamed("obj_1", false, u64spec(1), nil)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := s.LookupNamed("obj_1", false); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
}

func TestNameHashIsStable(t *testing.T) {
	// Fixed values, one per branch of the hash: a change would make
	// existing segments unreadable (and needs a new manager format).
	for name, want := range map[string][2]uint64{
		"a":                        {0xc31e7f6f2474628e, 0x85c42bf2f3cd3b67},
		"abc":                      {0xf3a6d41783b5e58d, 0x5f7d955ec6130ffe},
		"obj_1":                    {0xab7779f730ee4b5b, 0xb304ca57d363de97},
		"obj_12345":                {0xc92db7bf9dcfcc3b, 0x9f72ef32b555ad6b},
		"sixteen-bytes-xx":         {0x882ba27b14112300, 0x7a92a63d94f8a8b7},
		strings.Repeat("long/", 8): {0x036a333dee2eba0d, 0x09518f28433c3324},
	} {
		assert.Equal(t, want[0], nameHash(name, false), "%q", name)
		assert.Equal(t, want[1], nameHash(name, true), "%q unique", name)
	}
}

// TestNameHashSpreads checks that typical families of names spread over
// the index's low bits and the slot tag's high bits about as a random
// function would: the count of distinct values of n hashes in m buckets
// is near m(1 - e^(-n/m)).
func TestNameHashSpreads(t *testing.T) {
	const n, bits = 100_000, 17
	families := map[string]func(i int) string{
		"obj_i":    func(i int) string { return fmt.Sprintf("obj_%d", i) },
		"short":    func(i int) string { return string([]byte{byte(i), byte(i >> 8), byte(i >> 16)}[:1+i%3]) },
		"path":     func(i int) string { return fmt.Sprintf("/srv/app/%d/state", i) },
		"long":     func(i int) string { return strings.Repeat("x", 30) + fmt.Sprint(i) + strings.Repeat("y", 30) },
		"zero-pad": func(i int) string { return fmt.Sprintf("%012d", i) },
		"one-bit":  func(i int) string { return fmt.Sprintf("%08x%08x", uint64(1)<<(i%64), i/64) },
	}
	m := float64(uint64(1) << bits)
	want := m * (1 - math.Exp(-n/m))
	for fam, gen := range families {
		low, high := map[uint64]bool{}, map[uint64]bool{}
		seen := map[string]bool{}
		for i := 0; len(seen) < n && i < 10*n; i++ {
			name := gen(i)
			if seen[name] {
				continue
			}
			seen[name] = true
			h := nameHash(name, false)
			low[h&(1<<bits-1)] = true
			high[h>>(64-bits)] = true
		}
		if len(seen) < n {
			want := m * (1 - math.Exp(-float64(len(seen))/m))
			assert.InDelta(t, want, float64(len(low)), want*0.02, "%s: low bits", fam)
			continue
		}
		assert.InDelta(t, want, float64(len(low)), want*0.02, "%s: low bits", fam)
		assert.InDelta(t, want, float64(len(high)), want*0.02, "%s: high bits", fam)
	}
}

// TestControlWord checks the index's word arithmetic against a byte-by-
// byte reading of random control words.
func TestControlWord(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	states := []uint64{ctrlEmpty, ctrlTomb, 0, 1, 0x7f, 0x41}
	for range 20000 {
		c := uint64(0xff) << 56
		for k := range groupSlots {
			b := states[rng.IntN(len(states))]
			if rng.IntN(2) == 0 {
				b = rng.Uint64N(0x80)
			}
			c |= b << (8 * k)
		}
		tag := rng.Uint64N(0x80)
		if rng.IntN(2) == 0 {
			tag = c >> (8 * rng.IntN(groupSlots)) & 0x7f
		}
		match, empties := ctrlMatch(c, tag), ctrlEmpties(c)
		for k := range 8 {
			b, bit := c>>(8*k)&0xff, uint64(0x80)<<(8*k)
			if b == tag {
				require.NotZero(t, match&bit, "control %#x tag %#x: slot %d not marked", c, tag, k)
			}
			if b&0x80 != 0 {
				require.Zero(t, match&bit, "control %#x tag %#x: non-full slot %d marked", c, tag, k)
			}
			require.Equal(t, b == ctrlEmpty, empties&bit != 0, "control %#x: slot %d empty mark", c, k)
			require.Equal(t, b&0x80 != 0 && k < groupSlots, c&ctrlFree&bit != 0, "control %#x: slot %d free mark", c, k)
		}
	}
}

// TestIndexOverflowAndTombstones puts names that all start their probe
// in one group, so that they fill it and the groups after it (wrapping
// around the end of the index), then removes and re-adds some of them:
// every name must stay findable, a removal in a full group must leave a
// tombstone and one in a group with an empty slot an empty slot.
func TestIndexOverflowAndTombstones(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		h := s.h
		_, err := s.CreateNamed("seed", false, u64spec(1), nil)
		require.NoError(t, err)
		require.Equal(t, uint64(dirMinGroups), h.get(mDirCap))
		home := nameHash("seed", false) & (dirMinGroups - 1)
		// 40 more names homing to the seed's group: 41 of 56 slots, under
		// 7/8, so the index keeps its 8 groups and they spill over.
		var names []string
		for i := 0; len(names) < 40; i++ {
			n := fmt.Sprintf("spill_%d", i)
			if nameHash(n, false)&(dirMinGroups-1) == home {
				names = append(names, n)
			}
		}
		for i, n := range names {
			_, err := s.CreateNamed(n, false, u64spec(1), func(obj []byte) { binary.LittleEndian.PutUint64(obj, uint64(i)) })
			require.NoError(t, err)
		}
		require.Equal(t, uint64(dirMinGroups), h.get(mDirCap), "the index grew")
		check := func(live map[string]bool) {
			t.Helper()
			for i, n := range names {
				got, err := s.LookupNamed(n, false)
				if !live[n] {
					require.ErrorIs(t, err, ErrNotFound, n)
					continue
				}
				require.NoError(t, err, n)
				require.Equal(t, uint64(i), binary.LittleEndian.Uint64(got.Obj), n)
			}
			require.NoError(t, s.CheckSanity())
		}
		live := map[string]bool{}
		for _, n := range names {
			live[n] = true
		}
		check(live)
		// The home group is full and names live beyond it: removing one of
		// its names leaves a tombstone, and the names after it stay found.
		so, _, _ := h.find(names[0], false)
		gb := so &^ (groupLen - 1)
		require.Equal(t, home, (uint64(gb)-h.get(mDirTable))/groupLen, "first name not in its home group")
		require.Zero(t, ctrlEmpties(h.get(gb)), "home group has an empty slot")
		require.NoError(t, s.RemoveNamed(names[0], false, nil))
		delete(live, names[0])
		require.Equal(t, uint64(ctrlTomb), h.get(gb)>>(uint64(so)-uint64(gb)-8)&0xff)
		require.Equal(t, uint64(1), h.get(mDirTombs))
		check(live)
		// The last group written to has empty slots: removing its last name
		// empties the slot.
		last := names[len(names)-1]
		so, _, _ = h.find(last, false)
		gb = so &^ (groupLen - 1)
		require.NotZero(t, ctrlEmpties(h.get(gb)), "last group is full")
		require.NoError(t, s.RemoveNamed(last, false, nil))
		delete(live, last)
		require.Equal(t, uint64(ctrlEmpty), h.get(gb)>>(uint64(so)-uint64(gb)-8)&0xff)
		require.Equal(t, uint64(1), h.get(mDirTombs))
		check(live)
		// Re-adding a name of the home group reuses the tombstone.
		_, err = s.CreateNamed(names[0], false, u64spec(1), nil)
		require.NoError(t, err)
		require.Zero(t, h.get(mDirTombs))
		got, err := s.LookupNamed(names[0], false)
		require.NoError(t, err)
		binary.LittleEndian.PutUint64(got.Obj, 0)
		live[names[0]] = true
		check(live)
	})
}

// CreateNamedAs creates the name as CreateNamed does and returns only the
// object's address: the one LookupNamedAs and LookupNamed give.
func TestCreateNamedAs(t *testing.T) {
	s := newShmSeg(t)
	obj, err := s.CreateNamedAs("aligned", false, NameSpec{Count: 3, ElemSize: 8, Align: 64, Layout: []byte("u64")}, func(b []byte) { b[16] = 9 })
	require.NoError(t, err)
	assert.Zero(t, uintptr(obj)%64, "aligned as asked")
	n, err := s.LookupNamed("aligned", false)
	require.NoError(t, err)
	assert.Equal(t, unsafe.Pointer(&n.Obj[0]), obj)
	assert.Equal(t, byte(9), n.Obj[16])
	_, err = s.CreateNamedAs("aligned", false, NameSpec{Count: 1, ElemSize: 8}, nil)
	require.ErrorIs(t, err, ErrExists)
	_, err = s.CreateNamedAs("", false, NameSpec{Count: 1, ElemSize: 8}, nil)
	require.ErrorIs(t, err, ErrInvalidName)
	require.NoError(t, s.CheckSanity())
}
