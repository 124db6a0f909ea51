package mapped

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

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
	// Fixed values: a change would make existing segments unreadable.
	assert.Equal(t, uint64(0x5b7a91ff201d8c82), nameHash("obj_1", false))
	assert.NotEqual(t, nameHash("obj_1", false), nameHash("obj_1", true))
}
