//go:build !race

// These tests compare every in-place split with what the copy-on-write
// builder makes, byte for byte, across key and value types: about 16 s,
// and minutes under the race detector, which has nothing to find here
// (one goroutine), so the race pass leaves them out.

package objects

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// rvDump is the tree's exact structure: every node's header words, raw
// key slots (padding included), keys, formatted values, children.
func rvDump[K comparable, V any](m *Map[K, V], fv func(*V) string) string {
	o, err := m.op("dump")
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "n=%d ", m.n)
	var rec func(nd uint64)
	rec = func(nd uint64) {
		n, leaf, err := o.node(nd)
		if err != nil {
			b.WriteString("ERR " + err.Error())
			return
		}
		fmt.Fprintf(&b, "{%x/%x ", *(*uint64)(o.at(nd)), *(*uint64)(o.at(nd + 8)))
		for i := range n {
			fmt.Fprintf(&b, "%v[%s]", o.keyOf(nd, i), hex.EncodeToString(unsafe.Slice((*byte)(o.key(nd, i)), o.g.ks)))
			if leaf {
				b.WriteString(":" + fv((*V)(o.val(nd, i))))
			}
			b.WriteString(",")
		}
		if !leaf {
			for i := 0; i <= n; i++ {
				rec(*o.child(nd, i))
			}
		}
		b.WriteString("}")
	}
	if m.root != 0 {
		rec(m.root)
	}
	return b.String()
}

// rvPutBuilder is put as it was before the commit: builder.insert for
// every new key that does not fit its leaf.
func rvPutBuilder[K comparable, V any](m *Map[K, V], k K, v *V) (*V, error) {
	o, err := m.op("ref")
	if err != nil {
		return nil, err
	}
	var path [maxMapDepth]pathEnt
	depth, found := 0, false
	if m.root != 0 {
		if depth, found, err = o.descend(&k, &path); err != nil {
			return nil, err
		}
	}
	shape, _, err := shapeFor[V]()
	if err != nil {
		return nil, err
	}
	var l mapped.Lane
	if err := l.Begin(o.seg); err != nil {
		return nil, err
	}
	defer l.Abort()
	b := builder[K, V]{o: &o, l: &l}
	var nv *V
	if v != nil {
		c := *v
		nv = &c
	}
	res, err := b.insert(path[:depth], &k, nv, found, shape)
	if err != nil {
		l.Abort()
		return nil, err
	}
	return res, l.Commit()
}

type rvCase[K comparable, V any] struct {
	key  func(x int) K // increasing in x
	val  func(x int) V
	fill func(p *V, x int) error // a container value, filled in place after GetOrInsert
	fv   func(*V) string
	cmpK func(a, b K) int
	keys int
	want []string // key positions that must be seen
}

func rvZero[V any](p *V) bool {
	for _, c := range unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p)) {
		if c != 0 {
			return false
		}
	}
	return true
}

// rvEquiv (from a review of splitLeaf) applies the same random inserts (and some deletes) to map a
// through Set/GetOrInsert and to map b through builder.insert, and
// requires the two trees to be identical after each in-place split.
func rvEquiv[K comparable, V any](t *testing.T, c rvCase[K, V]) {
	seg, err := mapped.Open(file.Path(filepath.Join(t.TempDir(), "eq.seg")), mapped.CreateOnly, mapped.WithSize(1<<24))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	a, err := Construct(seg, "a", Map[K, V]{})
	require.NoError(t, err)
	b, err := Construct(seg, "b", Map[K, V]{})
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	posKinds, parKinds := map[string]int{}, map[string]int{}
	splits, budgetMax := 0, 0
	var inA []int // the keys set and not deleted
	for step, x := range r.Perm(c.keys) {
		k := c.key(x)
		split, pos, h, n, pi, pn := false, 0, 0, 0, 0, 0
		if o, err := a.op("p"); err == nil && a.root != 0 {
			var path [maxMapDepth]pathEnt
			d, found, err := o.descend(&k, &path)
			require.NoError(t, err)
			if !found && d > 1 && !o.g.inPlace(path[d-1]) && o.g.splitInPlace(path[d-2], path[d-1]) {
				split = true
				lf, pa := path[d-1], path[d-2]
				pos, n, h, pi, pn = lf.idx, lf.n, (lf.n+1)/2, pa.idx, pa.n
				est := 3*(16+8) + 16
				if pos < h {
					est += 16 + (h-pos)*int(o.g.ks) + 16 + ((h-pos)*int(o.g.vs)+7)&^7
				}
				if pn > pi {
					est += 16 + (pn-pi)*int(o.g.ks) + 16 + (pn-pi)*8
				}
				budgetMax = max(budgetMax, est)
			}
		}
		if split {
			// A panic at a step of the split: the deferred Abort undoes it,
			// as recovery does a killed one.
			step := []string{"saved", "written", "linked"}[splits%3]
			before, free := rvDump(a, c.fv), seg.FreeMemory()
			splitHook = func(s string) {
				if s == step {
					panic("die at " + s)
				}
			}
			r := outcome(func() {
				if c.fill != nil {
					_, _, _ = a.GetOrInsert(k)
				} else {
					_ = a.Set(k, c.val(x))
				}
			})
			splitHook = nil
			require.Equal(t, "die at "+step, r)
			require.Equal(t, before, rvDump(a, c.fv), "the split of %v undone at %s", k, step)
			require.Equal(t, free, seg.FreeMemory())
		}
		if c.fill != nil {
			pa, ins, err := a.GetOrInsert(k)
			require.NoError(t, err, "GetOrInsert %v (split %v)", k, split)
			require.True(t, ins)
			require.True(t, rvZero(pa), "GetOrInsert %v: a zero value", k)
			require.NoError(t, c.fill(pa, x))
			pb, err := rvPutBuilder(b, k, nil)
			require.NoError(t, err)
			require.NoError(t, c.fill(pb, x))
		} else {
			v := c.val(x)
			require.NoError(t, a.Set(k, v), "Set %v (split %v pos %d/%d parent %d/%d)", k, split, pos, n, pi, pn)
			_, err := rvPutBuilder(b, k, &v)
			require.NoError(t, err)
		}
		inA = append(inA, x)
		if split {
			splits++
			switch pos {
			case 0:
				posKinds["first"]++
			case h - 1:
				posKinds["h-1"]++
			case h:
				posKinds["h"]++
			case n:
				posKinds["last"]++
			default:
				posKinds["other"]++
			}
			switch pi {
			case 0:
				parKinds["first"]++
			case pn:
				parKinds["last"]++
			default:
				parKinds["middle"]++
			}
			require.Equal(t, rvDump(b, c.fv), rvDump(a, c.fv), "after the split that inserted %v", k)
			_, err := mapVerify(a, c.cmpK)
			require.NoError(t, err)
		}
		if step%7 == 6 {
			// A delete in both: merges and evening out next to leaves
			// that were split in place.
			// A key chosen by the seeded generator (not by a Go map's
			// iteration order), so that every run makes the same trees.
			j := r.IntN(len(inA))
			y := inA[j]
			inA[j] = inA[len(inA)-1]
			inA = inA[:len(inA)-1]
			ok, err := a.Delete(c.key(y))
			require.NoError(t, err)
			require.True(t, ok)
			ok, err = b.Delete(c.key(y))
			require.NoError(t, err)
			require.True(t, ok)
		}
	}
	require.Equal(t, rvDump(b, c.fv), rvDump(a, c.fv))
	_, err = mapVerify(a, c.cmpK)
	require.NoError(t, err)
	t.Logf("largest lane record of a split: %d of %d", budgetMax, laneRoom)
	t.Logf("%d in-place splits; key positions %v; parent indexes %v", splits, posKinds, parKinds)
	for _, kd := range c.want {
		require.NotZero(t, posKinds[kd], "no split with the key at %s", kd)
	}
	for _, kd := range []string{"first", "middle", "last"} {
		require.NotZero(t, parKinds[kd], "no split at parent index %s", kd)
	}
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, a.Clear())
	require.NoError(t, Destroy[Map[K, V]](seg, "a"))
	require.NoError(t, Destroy[Map[K, V]](seg, "b"))
	require.NoError(t, seg.CheckSanity())
	require.True(t, seg.AllMemoryDeallocated(), "every block freed exactly once")
}

type rv24 struct {
	A int64
	B int32
	C int16
	D int8
}

type rvStr struct {
	ID   int64
	Name String
}

type rvVec struct {
	A int8
	V Vector[int64]
}

func TestSplitLeafMatchesTheBuilder(t *testing.T) {
	fs := func(v any) string { return fmt.Sprint(v) }
	t.Run("int64-int64", func(t *testing.T) {
		rvEquiv(t, rvCase[int64, int64]{key: func(x int) int64 { return int64(x*3) - 20000 }, val: func(x int) int64 { return int64(-x) },
			fv: func(p *int64) string { return fs(*p) }, cmpK: cmp.Compare[int64], keys: 20000, want: []string{"first", "h-1", "h", "last"}})
	})
	t.Run("int32-int8", func(t *testing.T) {
		rvEquiv(t, rvCase[int32, int8]{key: func(x int) int32 { return int32(x*3) - 20000 }, val: func(x int) int8 { return int8(x) },
			fv: func(p *int8) string { return fs(*p) }, cmpK: cmp.Compare[int32], keys: 10000, want: []string{"h-1", "h", "last"}})
	})
	t.Run("uint16-empty", func(t *testing.T) {
		rvEquiv(t, rvCase[uint16, struct{}]{key: func(x int) uint16 { return uint16(x) }, val: func(x int) struct{} { return struct{}{} },
			fv: func(p *struct{}) string { return "" }, cmpK: cmp.Compare[uint16], keys: 15000, want: []string{"h-1", "h", "last"}})
	})
	t.Run("float64-24", func(t *testing.T) {
		rvEquiv(t, rvCase[float64, rv24]{key: func(x int) float64 { return float64(x)/4 - 1000 }, val: func(x int) rv24 { return rv24{int64(x), int32(-x), int16(x), int8(x)} },
			fv: func(p *rv24) string { return fs(*p) }, cmpK: cmp.Compare[float64], keys: 5000, want: []string{"h-1", "h", "last"}})
	})
	cmp2 := func(a, b [2]uint64) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	}
	k2 := func(x int) [2]uint64 { return [2]uint64{uint64(x / 5), uint64(x % 5)} }
	t.Run("2uint64-24", func(t *testing.T) {
		rvEquiv(t, rvCase[[2]uint64, [3]uint64]{key: k2, val: func(x int) [3]uint64 { return [3]uint64{uint64(x), 1, 2} },
			fv: func(p *[3]uint64) string { return fs(*p) }, cmpK: cmp2, keys: 3000, want: []string{"h-1", "h", "last"}})
	})
	t.Run("2uint64-120", func(t *testing.T) {
		rvEquiv(t, rvCase[[2]uint64, [15]uint64]{key: k2, val: func(x int) [15]uint64 { return [15]uint64{uint64(x), 14: 9} },
			fv: func(p *[15]uint64) string { return fs(*p) }, cmpK: cmp2, keys: 3000, want: []string{"first", "h-1", "h", "last"}})
	})
	t.Run("2uint64-56", func(t *testing.T) {
		rvEquiv(t, rvCase[[2]uint64, [7]uint64]{key: k2, val: func(x int) [7]uint64 { return [7]uint64{uint64(x), 6: 9} },
			fv: func(p *[7]uint64) string { return fs(*p) }, cmpK: cmp2, keys: 3000, want: []string{"first", "h-1", "h", "last"}})
	})
	t.Run("int64-String", func(t *testing.T) {
		rvEquiv(t, rvCase[int64, rvStr]{key: func(x int) int64 { return int64(x) },
			fill: func(p *rvStr, x int) error { p.ID = int64(x); return p.Name.Set(strings.Repeat("s", 8+x%30)) },
			fv:   func(p *rvStr) string { return fmt.Sprint(p.ID, p.Name.String()) }, cmpK: cmp.Compare[int64], keys: 4000, want: []string{"first", "h-1", "h", "last"}})
	})
	t.Run("uint16-Vector", func(t *testing.T) {
		rvEquiv(t, rvCase[uint16, rvVec]{key: func(x int) uint16 { return uint16(x) },
			fill: func(p *rvVec, x int) error { p.A = int8(x); return p.V.Append(int64(x), int64(2*x)) },
			fv:   func(p *rvVec) string { return fmt.Sprint(p.A, p.V.Slice()) }, cmpK: cmp.Compare[uint16], keys: 4000, want: []string{"first", "h-1", "h", "last"}})
	})
}

// rvSplitKey is a key absent from m whose Set splits its leaf in place,
// with the key in the left half (left) or not, at parent index 0 (first).
func rvSplitKey[V any](m *Map[int64, V], from int64, left, first bool) (int64, bool) {
	o, _ := m.op("p")
	for k := from; k < from+200000; k++ {
		var path [maxMapDepth]pathEnt
		d, found, err := o.descend(&k, &path)
		if err != nil || found || d < 2 || o.g.inPlace(path[d-1]) || !o.g.splitInPlace(path[d-2], path[d-1]) {
			continue
		}
		lf, pa := path[d-1], path[d-2]
		if (lf.idx < (lf.n+1)/2) == left && (pa.idx == 0) == first {
			return k, true
		}
	}
	return 0, false
}

// In a full fixed-size segment, a Set (or GetOrInsert) that would split
// a leaf in place is ErrNoSpace and leaves the tree, byte for byte, and
// the accounting as they were; a read-only open refuses it.
func TestSplitLeafNoSpaceAndReadOnly(t *testing.T) {
	panicOnFault(t)
	path := filepath.Join(t.TempDir(), "full.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20), mapped.WithFixedSize())
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	ints, err := Construct(seg, "ints", Map[int64, int64]{})
	require.NoError(t, err)
	strs, err := Construct(seg, "strs", Map[int64, rvStr]{})
	require.NoError(t, err)
	for _, x := range rand.New(rand.NewPCG(3, 4)).Perm(6000) {
		k := int64(x) * 4
		require.NoError(t, ints.Set(k, k))
		if x < 2000 {
			p, _, err := strs.GetOrInsert(k)
			require.NoError(t, err)
			require.NoError(t, p.Name.Set(strings.Repeat("x", 20)))
		}
	}
	fv := func(p *int64) string { return fmt.Sprint(*p) }
	fs := func(p *rvStr) string { return p.Name.String() }
	var cases []func() error
	for _, lf := range [][2]bool{{true, true}, {true, false}, {false, true}, {false, false}} {
		if k, ok := rvSplitKey(ints, 0, lf[0], lf[1]); ok {
			cases = append(cases, func() error { return ints.Set(k, -1) })
		}
		if k, ok := rvSplitKey(strs, 0, lf[0], lf[1]); ok {
			cases = append(cases, func() error { _, _, err := strs.GetOrInsert(k); return err })
		}
	}
	require.GreaterOrEqual(t, len(cases), 6)
	release := fillSegment(t, seg)
	b1, b2, free := rvDump(ints, fv), rvDump(strs, fs), seg.FreeMemory()
	for i, f := range cases {
		require.ErrorIs(t, f(), mapped.ErrNoSpace, "case %d", i)
		require.Equal(t, b1, rvDump(ints, fv), "case %d", i)
		require.Equal(t, b2, rvDump(strs, fs), "case %d", i)
		require.Equal(t, free, seg.FreeMemory())
		require.NoError(t, seg.CheckSanity())
		_, err := mapVerify(ints, cmp.Compare[int64])
		require.NoError(t, err)
	}
	release()
	ro, err := mapped.Open(file.Path(path), mapped.OpenReadOnly)
	require.NoError(t, err)
	defer ro.Close()
	rm, err := Find[Map[int64, int64]](ro, "ints")
	require.NoError(t, err)
	k, ok := rvSplitKey(rm, 0, true, false)
	require.True(t, ok)
	require.ErrorIs(t, rm.Set(k, 1), mapped.ErrReadOnly)
	require.Equal(t, b1, rvDump(ints, fv))
	for _, f := range cases {
		require.NoError(t, f())
	}
	_, err = mapVerify(ints, cmp.Compare[int64])
	require.NoError(t, err)
	require.NoError(t, Destroy[Map[int64, int64]](seg, "ints"))
	require.NoError(t, Destroy[Map[int64, rvStr]](seg, "strs"))
	require.True(t, seg.AllMemoryDeallocated())
}
