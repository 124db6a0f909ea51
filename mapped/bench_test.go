package mapped

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"unsafe"

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

// BenchmarkLane is what a container call pays for crash atomicity: claim
// a lane, save what changes, change it, commit (or abort). "save2x8" is a
// hash map's insert: the slot's control word and the count.
func BenchmarkLane(b *testing.B) {
	s := benchSeg(b)
	blk, err := s.Allocate(64)
	if err != nil {
		b.Fatal(err)
	}
	w := (*[2]uint64)(unsafe.Pointer(unsafe.SliceData(blk)))
	b.Run("commit", func(b *testing.B) {
		for b.Loop() {
			l, err := s.BeginLane()
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("save2x8", func(b *testing.B) {
		for b.Loop() {
			l := incInLane(b, s, w)
			if err := l.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		if w[0] != w[1] || w[0] == 0 {
			b.Fatalf("words %d and %d after the commits", w[0], w[1])
		}
	})
	b.Run("save2x8-abort", func(b *testing.B) {
		before := *w
		for b.Loop() {
			l := incInLane(b, s, w)
			l.Abort()
		}
		if *w != before {
			b.Fatalf("words %v after the aborts, %v before", *w, before)
		}
	})
}

// incInLane claims a lane, saves both words of w in it and adds one to
// each, leaving the commit or abort to the caller.
func incInLane(b *testing.B, s *Segment, w *[2]uint64) Lane {
	l, err := s.BeginLane()
	if err != nil {
		b.Fatal(err)
	}
	for i := range w {
		if err := l.Save(unsafe.Pointer(&w[i]), 8); err != nil {
			b.Fatal(err)
		}
		w[i]++
	}
	return l
}

func BenchmarkLockUnlock(b *testing.B) {
	s := benchSeg(b)
	for b.Loop() {
		_ = s.lockOnly("x")
		s.lk.unlock()
	}
}

func BenchmarkLookupNamed(b *testing.B) {
	s := benchSeg(b)
	const names = 100_000
	ns := make([]string, names)
	for i := range ns {
		ns[i] = fmt.Sprintf("obj_%d", i)
		if _, err := s.CreateNamed(ns[i], false, NameSpec{Count: 1, ElemSize: 8}, nil); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(42, 2))
	idx := make([]int, 1<<20)
	for i := range idx {
		idx[i] = rng.IntN(names)
	}
	k := 0
	for b.Loop() {
		i := idx[k&(len(idx)-1)]
		k++
		if _, err := s.LookupNamed(ns[i], false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupNamedAs is the typed layer's lookup as bench/cmd/mapbench
// drives it: 100,000 names "obj_<i>" holding a uint64 each, looked up in
// random order, the names kept inline (16 bytes each) as the C++
// harness's small strings are.
func BenchmarkLookupNamedAs(b *testing.B) {
	s := benchSeg(b)
	const names = 100_000
	layout := []byte("\x01\x06uint64u8")
	tab := make([]byte, names*16)
	name := func(i uint32) string {
		e := tab[i*16 : i*16+16]
		return unsafe.String(&e[1], int(e[0]))
	}
	for i := range uint32(names) {
		tab[i*16] = byte(copy(tab[i*16+1:i*16+16], "obj_"+strconv.Itoa(int(i))))
		init := func(o []byte) { *(*uint64)(unsafe.Pointer(&o[0])) = uint64(i) }
		if _, err := s.CreateNamed(name(i), false, NameSpec{Count: 1, ElemSize: 8, Align: 8, Layout: layout}, init); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(42, 2))
	idx := make([]uint32, 1<<20)
	for i := range idx {
		idx[i] = uint32(rng.IntN(names))
	}
	k := 0
	for b.Loop() {
		i := idx[k&(len(idx)-1)]
		k++
		p, n, exact, err := s.LookupNamedAs(name(i), false, layout)
		if err != nil || !exact || n != 1 || *(*uint64)(p) != uint64(i) {
			b.Fatalf("lookup %s: %v %v %d", name(i), err, exact, n)
		}
	}
}
