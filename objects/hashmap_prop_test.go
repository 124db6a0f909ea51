package objects

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// A HashMap against a Go map, with values that own blocks (a String):
// random sets, inserts in place, deletes, lookups, clears, bulk loads
// that rebuild and unloads that leave removed slots behind; after each
// step the contents must match and the segment be sane, and destroying
// the map gives back every byte. String keys (inline and not) take the
// group format.
func TestHashMapProperties(t *testing.T) {
	keys := rapid.SampledFrom([]string{"", "a", "short", "sixteen-bytes-xx", "seventeen-bytes-x", "a key long enough to own a block of its own", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"})
	hashMapProps(t, keys, func(i int64) string { return strconv.FormatInt(i, 10) })
}

// hashMapProps is a HashMap[K, String] property test: keys draws the
// keys of single calls, bulk makes the bulk calls' keys.
func hashMapProps[K comparable](t *testing.T, keys *rapid.Generator[K], bulk func(int64) K) {
	dir := t.TempDir()
	rapid.Check(t, func(rt *rapid.T) {
		seg := propSeg(rt, dir)
		free0 := seg.FreeMemory()
		h, destroy := propRoot[HashMap[K, String]](rt, seg)
		model := map[K]string{}
		check := func() {
			require.Equal(rt, len(model), h.Len())
			n := 0
			for k, v := range h.All() {
				want, ok := model[k]
				require.True(rt, ok, "unexpected key %v", k)
				require.Equal(rt, want, v.String())
				n++
			}
			require.Equal(rt, len(model), n)
			require.NoError(rt, seg.CheckSanity())
		}
		rt.Repeat(map[string]func(*rapid.T){
			"Set": func(t *rapid.T) {
				k, v := keys.Draw(t, "k"), strGen().Draw(t, "v")
				p, ins, err := h.GetOrInsert(k)
				require.NoError(t, err)
				_, had := model[k]
				require.Equal(t, !had, ins)
				require.NoError(t, p.Set(v))
				model[k] = v
			},
			"Delete": func(t *rapid.T) {
				k := keys.Draw(t, "k")
				ok, err := h.Delete(k)
				require.NoError(t, err)
				_, had := model[k]
				require.Equal(t, had, ok)
				delete(model, k)
			},
			"Get": func(t *rapid.T) {
				k := keys.Draw(t, "k")
				p, ok := h.Get(k)
				want, had := model[k]
				require.Equal(t, had, ok)
				if ok {
					require.Equal(t, want, p.String())
				}
			},
			"SetZero": func(t *rapid.T) {
				k := keys.Draw(t, "k")
				require.NoError(t, h.Set(k, String{})) // replaces, freeing the old value's block
				model[k] = ""
			},
			"Load": func(t *rapid.T) {
				from, n := rapid.Int64Range(100, 1000).Draw(t, "from"), rapid.Int64Range(1, 60).Draw(t, "n")
				for i := from; i < from+n; i++ {
					require.NoError(t, h.Set(bulk(i), String{}))
					model[bulk(i)] = ""
				}
			},
			"Unload": func(t *rapid.T) {
				from, n := rapid.Int64Range(100, 1000).Draw(t, "from"), rapid.Int64Range(1, 60).Draw(t, "n")
				for i := from; i < from+n; i++ {
					_, had := model[bulk(i)]
					ok, err := h.Delete(bulk(i))
					require.NoError(t, err)
					require.Equal(t, had, ok)
					delete(model, bulk(i))
				}
			},
			"Clear": func(t *rapid.T) {
				if rapid.IntRange(0, 9).Draw(t, "rarely") == 0 {
					require.NoError(t, h.Clear())
					clear(model)
				}
			},
			"": func(t *rapid.T) { check() },
		})
		propEnd(rt, seg, free0, destroy)
	})
}
