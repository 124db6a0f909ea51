package objects

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/mapstore/mapstore/mapped"
)

// State-machine property tests of Map against a Go map (sorted for
// order), with a structural verifier that walks the raw nodes after every
// step: key order across the whole tree, separators bounding their
// subtrees, node fill, leaves at one depth, the count, and that no block
// (node or string key) is held twice.

// treeStats is what mapVerify saw of a tree.
type treeStats struct {
	depth  int // levels, leaves included (0: empty)
	nodes  int
	leaves int
	blocks int // nodes and out-of-line key blocks
}

// mapVerify walks m's nodes and checks its structure; it reads raw nodes
// through the package's own helpers, and never trusts a word before
// checking it against the segment, so it reports damage as an error.
func mapVerify[K comparable, V any](m *Map[K, V], cmpK func(a, b K) int) (st treeStats, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("verify panicked: %v", r)
		}
	}()
	o, err := m.op("verify")
	if err != nil {
		return st, err
	}
	if m.root == 0 {
		if m.n != 0 {
			return st, fmt.Errorf("an empty tree with a count of %d", m.n)
		}
		return st, nil
	}
	owner := map[uint64]string{}
	own := func(off uint64, size uint64, what string) error {
		if prev, ok := owner[off]; ok {
			return fmt.Errorf("block %d held twice: by %s and by %s", off, prev, what)
		}
		owner[off] = what
		blk, err := o.seg.Block(mustHandle(o.seg, byteAt(o.at(off))))
		if err != nil {
			return fmt.Errorf("%s at %d is not a live block: %w", what, off, err)
		}
		if uint64(len(blk)) < size {
			return fmt.Errorf("%s at %d: a block of %d bytes, it needs %d", what, off, len(blk), size)
		}
		return nil
	}
	leafDepth, count := -1, 0
	var walk func(nd uint64, d int, lo, hi *K, path string) error
	walk = func(nd uint64, d int, lo, hi *K, path string) error {
		if d >= maxMapDepth {
			return fmt.Errorf("deeper than %d levels at %s", maxMapDepth, path)
		}
		n, leaf, err := o.node(nd)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		size, capn := o.g.inSize, o.g.innerCap
		if leaf {
			size, capn = o.g.leafSize, o.g.leafCap
		}
		if err := own(nd, uint64(size), "node "+path); err != nil {
			return err
		}
		st.nodes++
		if h := *(*uint64)(o.at(nd)); h&^(nodeLeaf|0xffff) != 0 {
			return fmt.Errorf("node %s: header %#x has stray bits", path, h)
		}
		switch {
		case n == 0:
			return fmt.Errorf("node %s (leaf %v) holds no key", path, leaf)
		case d > 0 && n < capn/2:
			return fmt.Errorf("node %s (leaf %v) holds %d keys, below half of %d", path, leaf, n, capn)
		}
		keys := make([]K, n)
		for i := range n {
			if o.g.str {
				w := (*[3]uint64)(o.key(nd, i))
				if w[0]&keyInline == 0 {
					if w[0] <= keyInlineMax {
						return fmt.Errorf("node %s key %d: %d bytes out of line", path, i, w[0])
					}
					if err := own(w[1], w[0], fmt.Sprintf("key %d of node %s", i, path)); err != nil {
						return err
					}
				}
			}
			keys[i] = o.keyOf(nd, i)
			if i > 0 && cmpK(keys[i-1], keys[i]) >= 0 {
				return fmt.Errorf("node %s: key %d %v not above key %d %v", path, i, keys[i], i-1, keys[i-1])
			}
			if lo != nil && cmpK(keys[i], *lo) < 0 {
				return fmt.Errorf("node %s: key %d %v below its separator %v", path, i, keys[i], *lo)
			}
			if hi != nil && cmpK(keys[i], *hi) >= 0 {
				return fmt.Errorf("node %s: key %d %v not below its separator %v", path, i, keys[i], *hi)
			}
		}
		if leaf {
			if leafDepth < 0 {
				leafDepth = d
			} else if leafDepth != d {
				return fmt.Errorf("leaf %s at depth %d, another at %d", path, d, leafDepth)
			}
			count += n
			st.leaves++
			return nil
		}
		for i := 0; i <= n; i++ {
			clo, chi := lo, hi
			if i > 0 {
				clo = &keys[i-1]
			}
			if i < n {
				chi = &keys[i]
			}
			if err := walk(*o.child(nd, i), d+1, clo, chi, fmt.Sprintf("%s/%d", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(m.root, 0, nil, nil, "root"); err != nil {
		return st, err
	}
	if uint64(count) != m.n {
		return st, fmt.Errorf("%d keys in the leaves, a count of %d", count, m.n)
	}
	st.depth, st.blocks = leafDepth+1, len(owner)
	return st, nil
}

// byteAt is the byte at p, for Handle.
func byteAt(p unsafe.Pointer) []byte { return unsafe.Slice((*byte)(p), 1) }

func cmpArr(a, b [2]int32) int {
	if c := cmp.Compare(a[0], b[0]); c != 0 {
		return c
	}
	return cmp.Compare(a[1], b[1])
}

// sortedKeys is the model's keys in order.
func sortedKeys[K comparable, V any](model map[K]V, cmpK func(a, b K) int) []K {
	keys := make([]K, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpK)
	return keys
}

// checkFlatMap compares m with model through every reader, and verifies
// its structure; it returns the tree's stats.
func checkFlatMap[K comparable, V comparable](t require.TestingT, seg *mapped.Segment, m *Map[K, V], model map[K]V, cmpK func(a, b K) int) treeStats {
	keys := sortedKeys(model, cmpK)
	require.Equal(t, len(keys), m.Len())
	// Element by element without testify (whose calls cost more than the
	// map's), failing with the whole picture.
	i := 0
	for k, v := range m.All() {
		if i >= len(keys) || keys[i] != k || model[k] != *v {
			require.Failf(t, "All disagrees with the model", "at %d: %v = %v", i, k, *v)
		}
		i++
	}
	require.Equal(t, len(keys), i, "All yields every key")
	for _, k := range keys {
		if v, ok := m.Get(k); !ok || *v != model[k] {
			require.Failf(t, "Get disagrees with the model", "Get(%v): %v, want %v", k, ok, model[k])
		}
	}
	k, v, ok := m.Min()
	require.Equal(t, len(keys) > 0, ok, "Min")
	if ok {
		require.Equal(t, keys[0], k, "Min")
		require.Equal(t, model[k], *v, "Min")
	}
	k, v, ok = m.Max()
	require.Equal(t, len(keys) > 0, ok, "Max")
	if ok {
		require.Equal(t, keys[len(keys)-1], k, "Max")
		require.Equal(t, model[k], *v, "Max")
	}
	st, err := mapVerify(m, cmpK)
	require.NoError(t, err)
	require.NoError(t, seg.CheckSanity())
	return st
}

// flatKind is one Map[K, V] under test: how to draw and build its keys
// and values.
type flatKind[K comparable, V comparable] struct {
	key    *rapid.Generator[K] // a key, from a domain small enough to hit
	keyOf  func(i int64) K     // the i-th key of a bulk load (order-preserving)
	val    *rapid.Generator[V]
	valOf  func(i int64) V
	cmpK   func(a, b K) int
	stats  *mapRunStats
	noBulk bool
}

// mapRunStats collects, over a property test's checks, the deepest tree
// and whether the root split and merged.
type mapRunStats struct {
	maxDepth, rootSplits, rootMerges int
}

func (s *mapRunStats) see(before, after treeStats) {
	s.maxDepth = max(s.maxDepth, after.depth)
	if before.depth > 0 && after.depth > before.depth {
		s.rootSplits++
	}
	if after.depth > 0 && after.depth < before.depth {
		s.rootMerges++
	}
}

// covered asserts the run reached what a property run must: trees of
// three levels, a root split and a root merge. Not under -short, whose
// 20 checks (rapid's default there) do not always merge a root.
func (s *mapRunStats) covered(t *testing.T) {
	if testing.Short() {
		return
	}
	assert.GreaterOrEqual(t, s.maxDepth, 3, "multi-level trees were built")
	assert.Positive(t, s.rootSplits, "a root split")
	assert.Positive(t, s.rootMerges, "a root merge")
}

func runFlatMapMachine[K comparable, V comparable](t *testing.T, kind flatKind[K, V]) {
	dir := t.TempDir()
	kind.stats = &mapRunStats{}
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		m, destroy := propRoot[Map[K, V]](t, seg)
		model := map[K]V{}
		var last treeStats
		present := func(t *rapid.T) K {
			if len(model) == 0 {
				t.Skip("empty")
			}
			keys := sortedKeys(model, kind.cmpK)
			return keys[rapid.IntRange(0, len(keys)-1).Draw(t, "i")]
		}
		actions := map[string]func(*rapid.T){
			"Set": func(t *rapid.T) {
				k, v := kind.key.Draw(t, "k"), kind.val.Draw(t, "v")
				require.NoError(t, m.Set(k, v))
				model[k] = v
			},
			"SetExisting": func(t *rapid.T) {
				k := present(t)
				v := kind.val.Draw(t, "v")
				require.NoError(t, m.Set(k, v))
				model[k] = v
			},
			"GetOrInsert": func(t *rapid.T) {
				k, v := kind.key.Draw(t, "k"), kind.val.Draw(t, "v")
				p, ins, err := m.GetOrInsert(k)
				require.NoError(t, err)
				old, had := model[k]
				require.Equal(t, !had, ins, "inserted")
				var zero V
				if had {
					require.Equal(t, old, *p)
				} else {
					require.Equal(t, zero, *p, "a new value is zero")
				}
				*p = v
				model[k] = v
			},
			"DeletePresent": func(t *rapid.T) {
				k := present(t)
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.True(t, ok)
				delete(model, k)
			},
			"DeleteAbsent": func(t *rapid.T) {
				k := kind.key.Draw(t, "k")
				_, had := model[k]
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.Equal(t, had, ok)
				delete(model, k)
			},
			"GetHas": func(t *rapid.T) {
				k := kind.key.Draw(t, "k")
				v, ok := m.Get(k)
				mv, had := model[k]
				require.Equal(t, had, ok)
				require.Equal(t, had, m.Has(k))
				if had {
					require.Equal(t, mv, *v)
				} else {
					require.Nil(t, v)
				}
			},
			"Clear": func(t *rapid.T) {
				if rapid.IntRange(0, 3).Draw(t, "rarely") != 0 {
					t.Skip("kept")
				}
				require.NoError(t, m.Clear())
				clear(model)
			},
			"Range": func(t *rapid.T) {
				from, to := kind.key.Draw(t, "from"), kind.key.Draw(t, "to")
				if len(model) > 0 && rapid.Bool().Draw(t, "fromPresent") {
					from = present(t)
				}
				stop := rapid.IntRange(0, 20).Draw(t, "stop") // 0: to the end
				var want, got []K
				for _, k := range sortedKeys(model, kind.cmpK) {
					if kind.cmpK(k, from) >= 0 && kind.cmpK(k, to) < 0 {
						want = append(want, k)
					}
				}
				for k, v := range m.Range(from, to) {
					require.Equal(t, model[k], *v)
					got = append(got, k)
					if len(got) == stop {
						break
					}
				}
				if stop > 0 && len(want) > stop {
					want = want[:stop]
				}
				require.Equal(t, want, got, "Range(%v, %v)", from, to)
			},
		}
		if !kind.noBulk {
			// Thousands of keys at once: multi-level splits up to the root,
			// and deleting most of them, merges up to the root.
			actions["Load"] = func(t *rapid.T) {
				n := rapid.IntRange(100, 2500).Draw(t, "n")
				base := rapid.Int64Range(-1<<20, 1<<20).Draw(t, "base")
				order := rapid.IntRange(0, 2).Draw(t, "order") // up, down, shuffled
				idx := make([]int64, n)
				for i := range idx {
					idx[i] = base + int64(i)*int64(1+i%3)
				}
				switch order {
				case 1:
					slices.Reverse(idx)
				case 2:
					rng := rand.New(rand.NewPCG(uint64(base), uint64(n)))
					rng.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
				}
				for _, i := range idx {
					k, v := kind.keyOf(i), kind.valOf(i)
					require.NoError(t, m.Set(k, v))
					model[k] = v
				}
			}
			actions["Unload"] = func(t *rapid.T) {
				keys := sortedKeys(model, kind.cmpK)
				if len(keys) < 50 {
					t.Skip("small")
				}
				keep := rapid.IntRange(0, 9).Draw(t, "keep") // one in keep+1 stays (0: none)
				from := rapid.IntRange(0, len(keys)-1).Draw(t, "from")
				to := rapid.IntRange(from, len(keys)).Draw(t, "to")
				if rapid.Bool().Draw(t, "all") {
					from, to = 0, len(keys)
				}
				del := keys[from:to]
				if rapid.Bool().Draw(t, "backwards") {
					slices.Reverse(del)
				}
				for j, k := range del {
					if keep > 0 && j%(keep+1) == 0 {
						continue
					}
					ok, err := m.Delete(k)
					require.NoError(t, err)
					require.True(t, ok, "Delete(%v)", k)
					delete(model, k)
				}
			}
		}
		actions[""] = func(t *rapid.T) {
			st := checkFlatMap(t, seg, m, model, kind.cmpK)
			kind.stats.see(last, st)
			last = st
		}
		t.Repeat(actions)
		propEnd(t, seg, free0, destroy)
	})
	t.Logf("deepest tree %d levels; %d steps grew the root, %d shrank it", kind.stats.maxDepth, kind.stats.rootSplits, kind.stats.rootMerges)
	if !kind.noBulk {
		kind.stats.covered(t)
	}
}

// bigVal is a value large enough that a leaf holds few of them (4), so
// that splits and merges are frequent.
type bigVal struct {
	A int64
	B [24]int64
}

func bigOf(i int64) bigVal {
	var v bigVal
	v.A = i
	for j := range v.B {
		v.B[j] = i*31 + int64(j)
	}
	return v
}

func TestMapInt64Properties(t *testing.T) {
	runFlatMapMachine(t, flatKind[int64, int64]{
		key:   rapid.OneOf(rapid.Int64Range(-200, 200), rapid.Int64()),
		keyOf: func(i int64) int64 { return i },
		val:   rapid.Int64(),
		valOf: func(i int64) int64 { return i * 7 },
		cmpK:  cmp.Compare[int64],
	})
}

// uint64 keys, around 0, 2^63 (where a signed order would differ) and
// the greatest: Get, Set and the others take walkWord's unsigned path.
func TestMapUint64Properties(t *testing.T) {
	runFlatMapMachine(t, flatKind[uint64, int64]{
		key: rapid.OneOf(rapid.Uint64Range(0, 200), rapid.Uint64Range(1<<63-100, 1<<63+100),
			rapid.Uint64Range(math.MaxUint64-100, math.MaxUint64), rapid.Uint64()),
		keyOf: func(i int64) uint64 { return uint64(i) + 1<<63 }, // around 2^63
		val:   rapid.Int64(),
		valOf: func(i int64) int64 { return i * 7 },
		cmpK:  cmp.Compare[uint64],
	})
}

func TestMapBigValueProperties(t *testing.T) {
	runFlatMapMachine(t, flatKind[int64, bigVal]{
		key:   rapid.Int64Range(-300, 300),
		keyOf: func(i int64) int64 { return i },
		val:   rapid.Custom(func(t *rapid.T) bigVal { return bigOf(rapid.Int64().Draw(t, "a")) }),
		valOf: bigOf,
		cmpK:  cmp.Compare[int64],
	})
}

// mapKeyStr is the i-th key of a bulk load of string keys (distinct for
// distinct i): short (inline) and long ones.
func mapKeyStr(i int64) string {
	s := fmt.Sprintf("%c%013d", 'a'+byte(uint64(i)>>62), uint64(i)+1<<40)
	if i%3 != 0 {
		s += strings.Repeat("-long", int(uint64(i)%7)) // past 16 bytes: out of line
	}
	return s
}

func TestMapStringProperties(t *testing.T) {
	runFlatMapMachine(t, flatKind[string, int64]{
		key: rapid.OneOf(
			rapid.StringMatching(`[a-c]{0,3}`),               // short, colliding
			rapid.StringMatching(`[a-c]{14,18}`),             // around the inline limit
			rapid.StringMatching(`x[a-c]{0,2}-[a-z]{20,60}`), // long
			rapid.String(),
		),
		keyOf: mapKeyStr,
		val:   rapid.Int64(),
		valOf: func(i int64) int64 { return -i },
		cmpK:  strings.Compare,
	})
}

func TestMapArrayFloatProperties(t *testing.T) {
	runFlatMapMachine(t, flatKind[[2]int32, float64]{
		key: rapid.Custom(func(t *rapid.T) [2]int32 {
			return [2]int32{rapid.Int32Range(-3, 3).Draw(t, "a"), rapid.Int32Range(-40, 40).Draw(t, "b")}
		}),
		keyOf: func(i int64) [2]int32 { return [2]int32{int32(i >> 8), int32(i & 0xff)} },
		val:   rapid.Float64Range(-1e9, 1e9),
		valOf: func(i int64) float64 { return float64(i) / 4 },
		cmpK:  cmpArr,
	})
}

// keyStrGen draws map keys: short (inline), around the inline limit, and
// long (a block of their own).
func keyStrGen() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.StringMatching(`[a-d]{0,3}`),
		rapid.StringMatching(`[a-b]{15,17}`),
		rapid.StringMatching(`x[a-c]{0,2}-[a-z]{20,40}`),
	)
}

// Map[string, record] (a struct holding a String and a Vector[String])
// against map[string]recordModel: values built in place through
// GetOrInsert, replaced by Set (freeing the old one's storage), deleted,
// cleared, and moved between leaves by splits and merges.
func TestMapOfRecordProperties(t *testing.T) {
	dir := t.TempDir()
	var stats mapRunStats
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		m, destroy := propRoot[Map[string, record]](t, seg)
		model := map[string]recordModel{}
		var last treeStats
		present := func(t *rapid.T) string {
			if len(model) == 0 {
				t.Skip("empty")
			}
			keys := sortedKeys(model, strings.Compare)
			return keys[rapid.IntRange(0, len(keys)-1).Draw(t, "i")]
		}
		get := func(t *rapid.T, k string) *record {
			r, ok := m.Get(k)
			require.True(t, ok, "Get(%q)", k)
			return r
		}
		// build inserts k (or finds it) and fills it in place.
		build := func(t *rapid.T, k string, id int64, name string, tags []string) {
			r, ins, err := m.GetOrInsert(k)
			require.NoError(t, err)
			rm, had := model[k]
			require.Equal(t, !had, ins)
			if ins {
				require.Zero(t, r.ID)
				require.Equal(t, 0, r.Name.Len())
				require.Equal(t, 0, r.Tags.Len())
			}
			r.ID, rm.ID = id, id
			require.NoError(t, r.Name.Set(name))
			rm.Name = name
			for _, tag := range tags {
				require.NoError(t, r.Tags.Append(String{}))
				require.NoError(t, r.Tags.At(r.Tags.Len()-1).Set(tag))
				rm.Tags = append(rm.Tags, tag)
			}
			model[k] = rm
		}
		t.Repeat(map[string]func(*rapid.T){
			"GetOrInsert": func(t *rapid.T) {
				build(t, keyStrGen().Draw(t, "k"), rapid.Int64().Draw(t, "id"), strGen().Draw(t, "name"),
					rapid.SliceOfN(strGen(), 0, 3).Draw(t, "tags"))
			},
			"SetName": func(t *rapid.T) {
				k := present(t)
				s := strGen().Draw(t, "name")
				require.NoError(t, get(t, k).Name.Set(s))
				rm := model[k]
				rm.Name = s
				model[k] = rm
			},
			"AddTag": func(t *rapid.T) {
				k := present(t)
				s := strGen().Draw(t, "tag")
				r := get(t, k)
				require.NoError(t, r.Tags.Append(String{}))
				require.NoError(t, r.Tags.At(r.Tags.Len()-1).Set(s))
				rm := model[k]
				rm.Tags = append(slices.Clone(rm.Tags), s)
				model[k] = rm
			},
			"Set": func(t *rapid.T) { // replaces a value, freeing what the old one owns
				k := keyStrGen().Draw(t, "k")
				if len(model) > 0 && rapid.Bool().Draw(t, "existing") {
					k = present(t)
				}
				id := rapid.Int64().Draw(t, "id")
				require.NoError(t, m.Set(k, record{ID: id}))
				model[k] = recordModel{ID: id}
			},
			"DeletePresent": func(t *rapid.T) {
				k := present(t)
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.True(t, ok)
				delete(model, k)
			},
			"DeleteAbsent": func(t *rapid.T) {
				k := keyStrGen().Draw(t, "k")
				_, had := model[k]
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.Equal(t, had, ok)
				delete(model, k)
			},
			"Clear": func(t *rapid.T) {
				if rapid.IntRange(0, 3).Draw(t, "rarely") != 0 {
					t.Skip("kept")
				}
				require.NoError(t, m.Clear())
				clear(model)
			},
			"Load": func(t *rapid.T) { // enough records to split up to the root
				n := rapid.IntRange(50, 400).Draw(t, "n")
				base := rapid.Int64Range(0, 1<<20).Draw(t, "base")
				for i := range int64(n) {
					j := base + i*int64(1+i%5)
					build(t, mapKeyStr(j), j, kText(j, int(j%40)), []string{kText(-j, 20+int(j%3))}[:j%2])
				}
			},
			"Unload": func(t *rapid.T) {
				keys := sortedKeys(model, strings.Compare)
				if len(keys) < 30 {
					t.Skip("small")
				}
				keep := rapid.IntRange(0, 5).Draw(t, "keep")
				for j, k := range keys {
					if keep > 0 && j%(keep+1) == 0 {
						continue
					}
					ok, err := m.Delete(k)
					require.NoError(t, err)
					require.True(t, ok)
					delete(model, k)
				}
			},
			"": func(t *rapid.T) {
				keys := sortedKeys(model, strings.Compare)
				require.Equal(t, len(keys), m.Len())
				i := 0
				for k, r := range m.All() {
					require.Less(t, i, len(keys))
					require.Equal(t, keys[i], k)
					checkRecord(t, k, r, model[k])
					i++
				}
				require.Equal(t, len(keys), i)
				st, err := mapVerify(m, strings.Compare)
				require.NoError(t, err)
				stats.see(last, st)
				last = st
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
	t.Logf("deepest tree %d levels; %d steps grew the root, %d shrank it", stats.maxDepth, stats.rootSplits, stats.rootMerges)
	stats.covered(t)
}

func checkRecord(t require.TestingT, k string, r *record, want recordModel) {
	if r.ID != want.ID || r.Name.String() != want.Name || r.Tags.Len() != len(want.Tags) {
		require.Failf(t, "a record disagrees with the model", "%q: {%d %q %d tags}, want %+v", k, r.ID, r.Name.String(), r.Tags.Len(), want)
	}
	for j, tag := range r.Tags.All() {
		if tag.String() != want.Tags[j] {
			require.Failf(t, "a tag disagrees with the model", "%q tag %d: %q, want %q", k, j, tag.String(), want.Tags[j])
		}
	}
}

type innerMap = Map[string, Vector[int64]]

// Map[int64, Map[string, Vector[int64]]] against map[int64]map[string][]int64:
// inner maps built where they lie (GetOrInsert, then use the inner map),
// grown to several levels, replaced (Set of an empty map frees the old
// tree and its vectors), deleted and cleared with everything inside.
func TestMapOfMapProperties(t *testing.T) {
	dir := t.TempDir()
	var stats mapRunStats
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		m, destroy := propRoot[Map[int64, innerMap]](t, seg)
		model := map[int64]map[string][]int64{}
		var prev treeStats
		last := func(st treeStats) (treeStats, treeStats) { p := prev; prev = st; return p, st }
		outerKey := rapid.Int64Range(-20, 20)
		innerKey := rapid.OneOf(rapid.StringMatching(`[a-c]{1,3}`), rapid.StringMatching(`y[a-c]{1,2}-[a-z]{16,30}`))
		present := func(t *rapid.T) int64 {
			if len(model) == 0 {
				t.Skip("empty")
			}
			keys := sortedKeys(model, cmp.Compare[int64])
			return keys[rapid.IntRange(0, len(keys)-1).Draw(t, "i")]
		}
		outer := func(t *rapid.T, k int64) *innerMap {
			in, ins, err := m.GetOrInsert(k)
			require.NoError(t, err)
			_, had := model[k]
			require.Equal(t, !had, ins)
			if ins {
				require.Equal(t, 0, in.Len())
				model[k] = map[string][]int64{}
			}
			return in
		}
		put := func(t *rapid.T, k int64, in *innerMap, s string, xs []int64) {
			v, ins, err := in.GetOrInsert(s)
			require.NoError(t, err)
			_, had := model[k][s]
			require.Equal(t, !had, ins)
			require.NoError(t, v.Append(xs...))
			model[k][s] = append(slices.Clone(model[k][s]), xs...)
		}
		t.Repeat(map[string]func(*rapid.T){
			"InnerPut": func(t *rapid.T) {
				k := outerKey.Draw(t, "k")
				in := outer(t, k)
				put(t, k, in, innerKey.Draw(t, "s"), rapid.SliceOfN(rapid.Int64(), 0, 5).Draw(t, "xs"))
			},
			"InnerLoad": func(t *rapid.T) { // an inner map of several levels
				k := outerKey.Draw(t, "k")
				in := outer(t, k)
				n := rapid.IntRange(20, 300).Draw(t, "n")
				base := rapid.Int64Range(0, 1000).Draw(t, "base")
				for i := range int64(n) {
					put(t, k, in, mapKeyStr(base+i), []int64{i, -i}[:i%3%2+1])
				}
			},
			"InnerDelete": func(t *rapid.T) {
				k := present(t)
				in, ok := m.Get(k)
				require.True(t, ok)
				s := innerKey.Draw(t, "s")
				if len(model[k]) > 0 && rapid.Bool().Draw(t, "present") {
					ks := sortedKeys(model[k], strings.Compare)
					s = ks[rapid.IntRange(0, len(ks)-1).Draw(t, "j")]
				}
				_, had := model[k][s]
				ok, err := in.Delete(s)
				require.NoError(t, err)
				require.Equal(t, had, ok)
				delete(model[k], s)
			},
			"InnerClear": func(t *rapid.T) {
				k := present(t)
				in, _ := m.Get(k)
				require.NoError(t, in.Clear())
				clear(model[k])
			},
			"OuterSet": func(t *rapid.T) { // over an existing key: frees the old inner map
				k := outerKey.Draw(t, "k")
				if len(model) > 0 && rapid.Bool().Draw(t, "existing") {
					k = present(t)
				}
				require.NoError(t, m.Set(k, innerMap{}))
				model[k] = map[string][]int64{}
			},
			"OuterDelete": func(t *rapid.T) {
				k := outerKey.Draw(t, "k")
				if len(model) > 0 && rapid.Bool().Draw(t, "present") {
					k = present(t)
				}
				_, had := model[k]
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.Equal(t, had, ok)
				delete(model, k)
			},
			"OuterClear": func(t *rapid.T) {
				if rapid.IntRange(0, 3).Draw(t, "rarely") != 0 {
					t.Skip("kept")
				}
				require.NoError(t, m.Clear())
				clear(model)
			},
			"OuterLoad": func(t *rapid.T) { // outer splits move the inner maps' headers
				n := rapid.IntRange(30, 200).Draw(t, "n")
				base := rapid.Int64Range(100, 1<<20).Draw(t, "base")
				for i := range int64(n) {
					k := base + 3*i
					in := outer(t, k)
					put(t, k, in, mapKeyStr(i), []int64{k})
				}
			},
			"OuterUnload": func(t *rapid.T) {
				keys := sortedKeys(model, cmp.Compare[int64])
				if len(keys) < 20 {
					t.Skip("small")
				}
				for j, k := range keys {
					if j%4 == 0 {
						continue
					}
					ok, err := m.Delete(k)
					require.NoError(t, err)
					require.True(t, ok)
					delete(model, k)
				}
			},
			"": func(t *rapid.T) {
				keys := sortedKeys(model, cmp.Compare[int64])
				require.Equal(t, len(keys), m.Len())
				i := 0
				for k, in := range m.All() {
					require.Less(t, i, len(keys))
					require.Equal(t, keys[i], k)
					i++
					want := model[k]
					require.Equal(t, len(want), in.Len(), "inner map %d", k)
					ks := sortedKeys(want, strings.Compare)
					j := 0
					for s, v := range in.All() {
						if j >= len(ks) || ks[j] != s || !slices.Equal(want[s], v.Slice()) {
							require.Failf(t, "an inner map disagrees with the model", "map %d at %d: %q = %v", k, j, s, v.Slice())
						}
						j++
					}
					require.Equal(t, len(ks), j)
					ist, err := mapVerify(in, strings.Compare)
					require.NoError(t, err, "inner map %d", k)
					stats.maxDepth = max(stats.maxDepth, ist.depth)
				}
				require.Equal(t, len(keys), i)
				st, err := mapVerify(m, cmp.Compare[int64])
				require.NoError(t, err)
				stats.see(last(st))
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
	t.Logf("deepest tree %d levels; %d steps grew the outer root, %d shrank it", stats.maxDepth, stats.rootSplits, stats.rootMerges)
	stats.covered(t)
}
