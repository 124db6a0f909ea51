package mapped

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/mapstore/mapstore/backing/shm"
)

func benchSeg(b *testing.B) *Segment {
	name := "mapstore-bench-" + filepath.Base(b.TempDir())
	s, err := Open(shm.Named(name), CreateOnly, WithSize(256<<20))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(); _ = shm.Remove(name) })
	return s
}

func BenchmarkAllocFree64(b *testing.B) {
	s := benchSeg(b)
	for b.Loop() {
		blk, err := s.Allocate(64)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Deallocate(blk); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllocMixed(b *testing.B) {
	s := benchSeg(b)
	rng := rand.New(rand.NewPCG(1, 2))
	live := make([][]byte, 10000)
	for i := range live {
		live[i], _ = s.Allocate(16 + rng.IntN(4081))
	}
	for b.Loop() {
		i := rng.IntN(len(live))
		if err := s.Deallocate(live[i]); err != nil {
			b.Fatal(err)
		}
		var err error
		if live[i], err = s.Allocate(16 + rng.IntN(4081)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	s := benchSeg(b)
	for b.Loop() {
		_ = s.lockW("x", opAllocate)
		s.unlockW()
	}
}
