package objects

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestWalkAVX512ChurnAtTheExtremes: walkAVX512 against the walk in Go
// (paths included) and a model, through 120,000 sets and deletes of keys
// clustered at the ends of the key range, at 0 and at 1<<63, each probed
// with its neighbours.
func TestWalkAVX512ChurnAtTheExtremes(t *testing.T) {
	t.Run("int64", func(t *testing.T) {
		near := func(r *rand.Rand) int64 {
			d := int64(r.IntN(3000))
			switch r.IntN(4) {
			case 0:
				return math.MinInt64 + d
			case 1:
				return math.MaxInt64 - d
			case 2:
				return d - 1500
			}
			return int64(r.Uint64())
		}
		churn(t, "ri", near)
	})
	t.Run("uint64", func(t *testing.T) {
		near := func(r *rand.Rand) uint64 {
			d := uint64(r.IntN(3000))
			switch r.IntN(4) {
			case 0:
				return d
			case 1:
				return math.MaxUint64 - d
			case 2:
				return 1<<63 - 1500 + d
			}
			return r.Uint64()
		}
		churn(t, "ru", near)
	})
}

func churn[K uint64 | int64](t *testing.T, name string, key func(*rand.Rand) K) {
	s := newSeg(t)
	require.NoError(t, s.Grow(64<<20))
	m, err := Construct(s, name, Map[K, int32]{})
	require.NoError(t, err)
	g, err := mapGeoOf[K, int32]()
	require.NoError(t, err)
	if !g.walk.asm {
		t.Skip("this machine has no AVX-512: walkWord walks in Go")
	}
	goWalk := *g
	goWalk.walk.asm = false
	rng := rand.New(rand.NewPCG(11, 12))
	model := map[K]bool{}
	probe := func(k K) {
		var pa, pg [maxMapDepth]pathEnt
		leaf, i, d, res := walkAVX512(s.Base(), s.Bound(), m.root, uint64(k), &g.walk, &pa)
		require.Less(t, res, 2)
		gl, gi, gd, gf, bad := walkWord(s, s.Base(), &goWalk, m.root, k, &pg)
		require.False(t, bad)
		require.Equal(t, []any{gl, gi, gd, gf}, []any{leaf, i, d, res == 1}, "key %d", k)
		require.Equal(t, pg[:gd], pa[:d])
		require.Equal(t, model[k], gf, "key %d model", k)
	}
	for step := 0; step < 120_000; step++ {
		k := key(rng)
		if rng.IntN(5) < 2 && len(model) > 0 {
			ok, err := m.Delete(k)
			require.NoError(t, err)
			require.Equal(t, model[k], ok)
			delete(model, k)
		} else {
			require.NoError(t, m.Set(k, int32(step)))
			model[k] = true
		}
		if step%7 == 0 {
			probe(k)
			probe(k + 1)
			probe(k - 1)
			probe(key(rng))
		}
	}
	for k := range model {
		probe(k)
		probe(k + 1)
		probe(k - 1)
	}
}

// modelWalk is what walkAVX512 answers, written in Go, for any memory:
// the hostile-memory test's reference.
func modelWalk(mem []byte, limit, nd, k uint64, w *walkGeo) (leaf uint64, i, depth, res int) {
	word := func(off uint64) uint64 { return *(*uint64)(unsafe.Pointer(&mem[off])) }
	for d := 0; d < maxMapDepth; d++ {
		if nd%8 != 0 || nd+w.maxSize < nd || nd+w.maxSize > limit {
			return nd, 0, d, 2
		}
		h := word(nd)
		n := h & 0xffff
		var mask uint64
		for j := 0; j < 32; j++ {
			if word(nd+16+8*uint64(j))^w.flip <= k^w.flip {
				mask |= 1 << j
			}
		}
		if b := n & 0xff; b < 64 {
			mask &= 1<<b - 1
		}
		c := bits.OnesCount64(mask)
		if h>>63 != 0 {
			if n > uint64(w.leafCap) {
				return nd, 0, d, 2
			}
			if c > 0 && word(nd+8+8*uint64(c)) == k {
				return nd, c - 1, d + 1, 1
			}
			return nd, c, d + 1, 0
		}
		if n > uint64(w.innerCap) {
			return nd, 0, d, 2
		}
		nd = word(nd + w.childOff + 8*uint64(c))
	}
	return nd, 0, maxMapDepth, 2
}

// TestWalkAVX512OnHostileMemory: random words with node-like headers
// (unsorted keys, counts up to 0xffff, misaligned and cyclic children,
// random limits) in a mapping between two inaccessible pages. The walk
// never reads outside [0, limit), never loops, answers as modelWalk
// does, and a leaf it returns lies below the limit with a place within
// its count.
func TestWalkAVX512OnHostileMemory(t *testing.T) {
	for _, gg := range []func() (*mapGeo, error){mapGeoOf[int64, int32], mapGeoOf[uint64, float64], mapGeoOf[int64, int64]} {
		g, err := gg()
		require.NoError(t, err)
		if !g.walk.asm {
			t.Skip("this machine has no AVX-512: walkWord walks in Go")
		}
		const size = 64 << 10
		pg := syscall.Getpagesize()
		raw, err := syscall.Mmap(-1, 0, size+2*pg, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		require.NoError(t, err)
		defer func() { _ = syscall.Munmap(raw) }()
		require.NoError(t, syscall.Mprotect(raw[:pg], syscall.PROT_NONE))
		require.NoError(t, syscall.Mprotect(raw[pg+size:], syscall.PROT_NONE))
		mem := raw[pg : pg+size]
		rng := rand.New(rand.NewPCG(3, 4))
		words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), size/8)
		cnt := [3]int{} // walks that did not find k, found it, gave up
		defer func() { t.Log(cnt) }()
		for it := 0; it < 3000; it++ {
			nodeOffs := []uint64{}
			for j := 0; j < 40; j++ {
				nodeOffs = append(nodeOffs, uint64(rng.IntN(size/8))*8)
			}
			vals := []uint64{0, 1, math.MaxUint64, 1 << 63, 1<<63 - 1, 5, 6, 7}
			for i := range words {
				switch rng.IntN(6) {
				case 0:
					words[i] = nodeOffs[rng.IntN(len(nodeOffs))] + uint64(rng.IntN(2)*4*rng.IntN(2))
				case 1:
					words[i] = vals[rng.IntN(len(vals))]
				case 2:
					words[i] = rng.Uint64()
				default:
					words[i] = uint64(rng.IntN(40))
				}
			}
			for _, o := range nodeOffs {
				if o+8 <= size {
					n := uint64(rng.IntN(40))
					if rng.IntN(20) == 0 {
						n = rng.Uint64() & 0xffff
					}
					words[o/8] = n | uint64(rng.IntN(2))<<63
				}
			}
			for q := 0; q < 50; q++ {
				nd := nodeOffs[rng.IntN(len(nodeOffs))]
				k := vals[rng.IntN(len(vals))]
				if rng.IntN(2) == 0 {
					k = uint64(rng.IntN(40))
				}
				limit := uint64(size)
				if rng.IntN(4) == 0 {
					limit = uint64(rng.IntN(size + 1))
				}
				l, i, d, r := walkAVX512(unsafe.Pointer(&mem[0]), limit, nd, k, &g.walk, nil)
				ml, mi, md, mr := modelWalk(mem, limit, nd, k, &g.walk)
				require.Equal(t, []any{ml, mi, md, mr}, []any{l, i, d, r}, "nd %d k %d", nd, k)
				if r < 2 {
					require.LessOrEqual(t, l+g.walk.maxSize, limit)
					n := int(words[l/8] & 0xffff)
					require.LessOrEqual(t, i, n)
				}
				cnt[r]++
				var p [maxMapDepth]pathEnt
				l2, i2, d2, r2 := walkAVX512(unsafe.Pointer(&mem[0]), limit, nd, k, &g.walk, &p)
				require.Equal(t, []any{l, i, d, r}, []any{l2, i2, d2, r2})
			}
		}
	}
}
