package objects_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// These mirror bench/cmd/mapbench's named cases at Go-benchmark scale:
// 100,000 uint64 objects named obj_<i>.
var benchNames = 100_000

func benchSegment(b *testing.B) *mapped.Segment {
	// The pid too: TempDir's base (001, ...) is the same in every
	// process, and two benchmark runs at once must not share a name.
	name := fmt.Sprintf("mapstore-objbench-%d-%s", os.Getpid(), filepath.Base(b.TempDir()))
	s, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(256<<20))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(); _ = shm.Remove(name) })
	return s
}

func benchNameList() []string {
	ns := make([]string, benchNames)
	for i := range ns {
		ns[i] = fmt.Sprintf("obj_%d", i)
	}
	return ns
}

func constructAll(b *testing.B, s *mapped.Segment, ns []string) {
	for i, n := range ns {
		if _, err := objects.Construct(s, n, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFind(b *testing.B) {
	s := benchSegment(b)
	ns := benchNameList()
	constructAll(b, s, ns)
	rng := rand.New(rand.NewPCG(42, 2))
	idx := make([]int, 1<<20)
	for i := range idx {
		idx[i] = rng.IntN(benchNames)
	}
	k := 0
	for b.Loop() {
		i := idx[k&(len(idx)-1)]
		k++
		p, err := objects.Find[uint64](s, ns[i])
		if err != nil || *p != uint64(i) {
			b.Fatalf("find %s: %v", ns[i], err)
		}
	}
}

func BenchmarkConstructDestroy(b *testing.B) {
	s := benchSegment(b)
	ns := benchNameList()
	k := 0
	for b.Loop() {
		n := ns[k%benchNames]
		k++
		if _, err := objects.Construct(s, n, uint64(k)); err != nil {
			b.Fatal(err)
		}
		if err := objects.Destroy[uint64](s, n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorAppend is bench/compare.sh's vector_push_back: uint64
// appends to an in-segment vector with no reserve (growth included).
func BenchmarkVectorAppend(b *testing.B) {
	s := benchSegment(b)
	v, err := objects.Construct(s, "v", objects.Vector[uint64]{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := v.Append(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStringSet is string_set: a 32-byte value into one String,
// alternating two values.
func BenchmarkStringSet(b *testing.B) {
	s := benchSegment(b)
	str, err := objects.Construct(s, "s", objects.String{})
	if err != nil {
		b.Fatal(err)
	}
	vals := [2]string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"}
	b.ResetTimer()
	for i := range b.N {
		if err := str.Set(vals[i&1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListPushPop is list_push_pop: push_back then, later, remove
// from the front; per pair.
func BenchmarkListPushPop(b *testing.B) {
	s := benchSegment(b)
	l, err := objects.Construct(s, "l", objects.List[uint64]{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.PushBack(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	for l.Len() > 0 {
		if err := l.Remove(l.Front()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorAppendReserved is Append within capacity: the path that
// takes no lane and no lock.
func BenchmarkVectorAppendReserved(b *testing.B) {
	s := benchSegment(b)
	v, err := objects.Construct(s, "v", objects.Vector[uint64]{})
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Reserve(b.N); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := v.Append(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorAppendWarm is Append within capacity over storage
// already touched: the instructions of an append, without page faults.
func BenchmarkVectorAppendWarm(b *testing.B) {
	s := benchSegment(b)
	v, err := objects.Construct(s, "v", objects.Vector[uint64]{})
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 1 << 16
	if err := v.Resize(chunk); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if i%chunk == 0 {
			_ = v.Truncate(0)
		}
		if err := v.Append(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// mapBenchKeys is n distinct random uint64 keys from a fixed seed.
func mapBenchKeys(n int) []uint64 {
	rng := rand.New(rand.NewPCG(42, 4))
	keys := make([]uint64, 0, n)
	seen := make(map[uint64]struct{}, n)
	for len(keys) < n {
		k := rng.Uint64()
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			keys = append(keys, k)
		}
	}
	return keys
}

var mapBenchSizes = []int{100_000, 1_000_000}

// BenchmarkMapSet is map_insert: Set of a new random uint64 key (value a
// float64) into an objects.Map[uint64, float64], which holds from 0 up to
// n keys during a pass; a pass that reaches n keys starts over with a
// fresh map (the Clear is not timed).
func BenchmarkMapSet(b *testing.B) {
	benchSets(b, func(s *mapped.Segment) (benchSetMap, error) {
		return objects.Construct(s, "m", objects.Map[uint64, float64]{})
	})
}

// BenchmarkHashMapSet is hashmap_insert: the same on an
// objects.HashMap[uint64, float64] (its rebuilds as it grows included).
func BenchmarkHashMapSet(b *testing.B) {
	benchSets(b, func(s *mapped.Segment) (benchSetMap, error) {
		return objects.Construct(s, "h", objects.HashMap[uint64, float64]{})
	})
}

// benchSetMap is what the map_insert benchmarks use of Map and HashMap.
type benchSetMap interface {
	Set(k uint64, v float64) error
	Clear() error
}

func benchSets(b *testing.B, construct func(*mapped.Segment) (benchSetMap, error)) {
	for _, n := range mapBenchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s := benchSegment(b)
			keys := mapBenchKeys(n)
			m, err := construct(s)
			if err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				if i == n {
					b.StopTimer()
					if err := m.Clear(); err != nil {
						b.Fatal(err)
					}
					i = 0
					b.StartTimer()
				}
				if err := m.Set(keys[i], float64(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// benchMap is what the map_find benchmarks use of Map and HashMap.
type benchMap interface {
	Set(k uint64, v float64) error
	Get(k uint64) (*float64, bool)
}

// BenchmarkMapGet is map_find: Get of a random present key in an
// objects.Map[uint64, float64] of n keys.
func BenchmarkMapGet(b *testing.B) {
	benchGets(b, func(s *mapped.Segment) (benchMap, error) {
		return objects.Construct(s, "m", objects.Map[uint64, float64]{})
	})
}

// BenchmarkHashMapGet is hashmap_find: the same on an
// objects.HashMap[uint64, float64].
func BenchmarkHashMapGet(b *testing.B) {
	benchGets(b, func(s *mapped.Segment) (benchMap, error) {
		return objects.Construct(s, "h", objects.HashMap[uint64, float64]{})
	})
}

func benchGets(b *testing.B, construct func(*mapped.Segment) (benchMap, error)) {
	for _, n := range mapBenchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s := benchSegment(b)
			keys := mapBenchKeys(n)
			m, err := construct(s)
			if err != nil {
				b.Fatal(err)
			}
			for i, k := range keys {
				if err := m.Set(k, float64(i)); err != nil {
					b.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(42, 5))
			idx := make([]uint32, 1<<20)
			for i := range idx {
				idx[i] = uint32(rng.IntN(n))
			}
			k := 0
			for b.Loop() {
				i := idx[k&(len(idx)-1)]
				k++
				v, ok := m.Get(keys[i])
				if !ok || *v != float64(i) {
					b.Fatalf("get %d: %v", keys[i], ok)
				}
			}
		})
	}
}

type benchMutexFix struct {
	Mu    objects.Mutex
	Count int64
}

// BenchmarkMutexLockUnlock is mapbench's mutex_lock_unlock: an
// uncontended Lock, a change, Unlock.
func BenchmarkMutexLockUnlock(b *testing.B) {
	s := benchSegment(b)
	m, err := objects.Construct(s, "mutex", benchMutexFix{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Mu.Lock(); err != nil {
			b.Fatal(err)
		}
		m.Count++
		if err := m.Mu.Unlock(); err != nil {
			b.Fatal(err)
		}
	}
}
