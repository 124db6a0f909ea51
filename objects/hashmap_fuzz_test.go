package objects

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzHashMap runs a program of HashMap[string, int64] calls decoded from
// the input against a Go map: keys from the input's bytes (inline and
// not), loads that make the table rebuild, unloads that leave removed
// slots behind. After each call the map must equal the model, and after
// it is deleted every byte is back.
func FuzzHashMap(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 3, 'a', 'b', 'c', 1, 1, 2, 'a', 2, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{5, 200, 6, 2, 5, 90, 6, 0, 4, 0x80, 5, 10})
	f.Add([]byte{0, 20, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'y', 'z', 'w', 3, 20, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := New[HashMap[string, int64]](seg)
		require.NoError(t, err)
		model := map[string]int64{}
		ops := &fuzzOps{b: data}
		key := func() string {
			b := make([]byte, ops.upTo(40))
			for i := range b {
				b[i] = ops.byte()
			}
			return string(b)
		}
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
					k := mapKeyStr(base + i)
					require.NoError(t, h.Set(k, base+i))
					model[k] = base + i
				}
			default: // Unload: delete about half
				for k := range model {
					if len(k)%2 == int(op>>7) {
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
				require.True(t, ok, "unexpected key %q", k)
				require.Equal(t, want, *v)
				n++
			}
			require.Equal(t, len(model), n)
		}
		require.NoError(t, seg.CheckSanity())
		fuzzEnd(t, seg, free0, h)
	})
}
