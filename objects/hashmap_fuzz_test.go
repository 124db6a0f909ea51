package objects

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

// FuzzHashMap runs a program of HashMap[string, int64] calls decoded from
// the input against a Go map: keys from the input's bytes (inline and
// not), loads that make the table rebuild, unloads that leave removed
// slots behind. After each call the map must equal the model, and after
// it is deleted every byte is back. String keys take the group format.
func FuzzHashMap(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 3, 'a', 'b', 'c', 1, 1, 2, 'a', 2, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{5, 200, 6, 2, 5, 90, 6, 0, 4, 0x80, 5, 10})
	f.Add([]byte{0, 20, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'y', 'z', 'w', 3, 20, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := &fuzzOps{b: data}
		key := func() string {
			b := make([]byte, ops.upTo(40))
			for i := range b {
				b[i] = ops.byte()
			}
			return string(b)
		}
		hashMapFuzz(t, seg, free0, ops, key, mapKeyStr, func(k string) int { return len(k) % 2 })
	})
}

// FuzzHashMapWord is FuzzHashMap for HashMap[int64, int64], the word
// format: keys from the input's bytes, small ones most often (runs of
// keys that probe into each other), and the two keys the table keeps in
// its head (0 and wordTomb) among them.
func FuzzHashMapWord(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 0, 1, 1, 0, 2, 2, 1, 3, 1, 0, 0})
	f.Add([]byte{5, 200, 6, 2, 5, 90, 6, 0, 4, 0x80, 5, 10})
	f.Add([]byte{0, 1, 7, 0, 2, 7, 2, 1, 3, 2, 7, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := &fuzzOps{b: data}
		key := func() int64 {
			switch b := ops.byte(); b {
			case 0:
				return 0
			case 1:
				return tombKey
			case 2: // a full word
				return ops.value()<<32 ^ ops.value()
			default:
				return int64(b) - 128
			}
		}
		hashMapFuzz(t, seg, free0, ops, key, func(i int64) int64 { return i }, func(k int64) int { return int(k & 1) })
	})
}

// hashMapFuzz runs the program of ops on a new HashMap[K, int64] in seg:
// key draws a key, bulk makes the keys of a load, half says which keys
// an unload removes.
func hashMapFuzz[K comparable](t *testing.T, s *mapped.Segment, free0 int64, ops *fuzzOps, key func() K, bulk func(int64) K, half func(K) int) {
	h, err := New[HashMap[K, int64]](s)
	require.NoError(t, err)
	model := map[K]int64{}
	for op, ok := ops.next(); ok; op, ok = ops.next() {
		switch op % 7 {
		case 0: // Set
			k, v := key(), ops.value()
			require.NoError(t, h.Set(k, v))
			model[k] = v
		case 1: // GetOrInsert, and a write through the pointer
			k, v := key(), ops.value()
			p, ins, err := h.GetOrInsert(k)
			require.NoError(t, err)
			old, had := model[k]
			require.Equal(t, !had, ins)
			require.Equal(t, old, *p)
			*p = v
			model[k] = v
		case 2: // Delete
			k := key()
			_, had := model[k]
			ok, err := h.Delete(k)
			require.NoError(t, err)
			require.Equal(t, had, ok)
			delete(model, k)
		case 3: // Get, Has
			k := key()
			v, ok := h.Get(k)
			want, had := model[k]
			require.Equal(t, had, ok)
			require.Equal(t, had, h.Has(k))
			if had {
				require.Equal(t, want, *v)
			}
		case 4: // Clear (one in two)
			if op&0x80 != 0 {
				require.NoError(t, h.Clear())
				clear(model)
			}
		case 5: // Load: many keys
			n, base := ops.upTo(400), int64(ops.byte())<<8
			for i := range int64(n) {
				k := bulk(base + i)
				require.NoError(t, h.Set(k, base+i))
				model[k] = base + i
			}
		default: // Unload: delete about half
			for k := range model {
				if half(k) == int(op>>7) {
					ok, err := h.Delete(k)
					require.NoError(t, err)
					require.True(t, ok)
					delete(model, k)
				}
			}
		}
		require.Equal(t, len(model), h.Len())
		n := 0
		for k, v := range h.All() {
			want, ok := model[k]
			require.True(t, ok, "unexpected key %v", k)
			require.Equal(t, want, *v)
			n++
		}
		require.Equal(t, len(model), n)
	}
	require.NoError(t, s.CheckSanity())
	fuzzEnd(t, s, free0, h)
}
