package objects

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzMap runs a program of Map[string, int64] calls decoded from the
// input against a Go map: keys from the input's bytes (short ones inline,
// long ones in blocks of their own), bulk loads and unloads that split
// and merge up to the root. After each call the map must equal the model
// and verify (mapVerify), and after it is deleted every byte is back.
func FuzzMap(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 3, 'a', 'b', 'c', 1, 1, 2, 'a', 2, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{6, 2, 88, 5, 0, 9, 7, 0, 6, 1, 200, 7, 3, 4, 0x80, 6, 0, 255})
	f.Add([]byte{0, 20, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'y', 'z', 'w', 1, 17, 'q', 6, 3, 10, 2, 0, 1})
	f.Add([]byte{6, 1, 0, 6, 2, 0, 7, 0, 6, 1, 100, 7, 1, 5, 2, 0, 9, 5, 9, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New[Map[string, int64]](seg)
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
		present := func() (string, bool) {
			if len(model) == 0 {
				return "", false
			}
			keys := sortedKeys(model, strings.Compare)
			return keys[ops.upTo(len(keys)-1)], true
		}
		for op, ok := ops.next(); ok; op, ok = ops.next() {
			switch op % 9 {
			case 0: // Set
				k, v := key(), ops.value()
				require.NoError(t, m.Set(k, v))
				model[k] = v
			case 1: // GetOrInsert, and a write through the pointer
				k, v := key(), ops.value()
				p, ins, err := m.GetOrInsert(k)
				require.NoError(t, err)
				old, had := model[k]
				require.Equal(t, !had, ins)
				require.Equal(t, old, *p)
				*p = v
				model[k] = v
			case 2: // Delete, of a present key (high bit) or any
				k := ""
				if p, ok := present(); ok && op&0x80 != 0 {
					k = p
				} else {
					k = key()
				}
				_, had := model[k]
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.Equal(t, had, ok)
				delete(model, k)
			case 3: // Get, Has
				k := key()
				v, ok := m.Get(k)
				want, had := model[k]
				require.Equal(t, had, ok)
				require.Equal(t, had, m.Has(k))
				if had {
					require.Equal(t, want, *v)
				}
			case 4: // Clear (one in two)
				if op&0x80 != 0 {
					require.NoError(t, m.Clear())
					clear(model)
				}
			case 5: // Range
				from, to := key(), key()
				var want, got []string
				for _, k := range sortedKeys(model, strings.Compare) {
					if k >= from && k < to {
						want = append(want, k)
					}
				}
				for k, v := range m.Range(from, to) {
					require.Equal(t, model[k], *v)
					got = append(got, k)
				}
				require.Equal(t, want, got, "Range(%q, %q)", from, to)
			case 6: // Load: many keys in order or interleaved
				n, base := ops.upTo(600), int64(ops.byte())<<8
				for i := range int64(n) {
					j := base + i
					if op&0x80 != 0 {
						j = base + (i%2)*int64(n) - (i%2)*2*i + i // from both ends
					}
					k := mapKeyStr(j)
					require.NoError(t, m.Set(k, j))
					model[k] = j
				}
			case 7: // Unload: delete all but one in every keep+1, in order
				keep := ops.upTo(4)
				for j, k := range sortedKeys(model, strings.Compare) {
					if keep > 0 && j%(keep+1) == 0 {
						continue
					}
					ok, err := m.Delete(k)
					require.NoError(t, err)
					require.True(t, ok)
					delete(model, k)
				}
			default: // a value changed in place
				if k, ok := present(); ok {
					p, _ := m.Get(k)
					v := ops.value()
					*p = v
					model[k] = v
				}
			}
			checkFlatMap(t, seg, m, model, strings.Compare)
		}
		fuzzEnd(t, seg, free0, m)
	})
}
