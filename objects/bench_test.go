package objects_test

import (
	"fmt"
	"math/rand/v2"
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
	name := "mapstore-objbench-" + filepath.Base(b.TempDir())
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
