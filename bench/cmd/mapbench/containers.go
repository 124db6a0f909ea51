package main

// The container cases (bench/README.md): vector_push_back, string_set and
// list_push_pop. Each works on one container constructed by name in the
// case's fresh segment; heap is the same work on a Go slice, a []byte and
// container/list.

import (
	"container/list"
	"fmt"
	"time"

	"github.com/mapstore/mapstore/objects"
)

const (
	vectorN = 10_000_000 // vector_push_back: appends
	stringN = 1_000_000  // string_set: sets
	listN   = 1_000_000  // list_push_pop: push_back then pop_front pairs
)

// stringVals are string_set's two 32-byte values, set alternately.
var stringVals = [2]string{
	"0123456789abcdef0123456789abcdef",
	"fedcba9876543210fedcba9876543210",
}

// vectorPushBack appends 0..vectorN-1 to an empty vector, no reserve.
func vectorPushBack(e env) (int, time.Duration, error) {
	const n = vectorN
	if e.seg == nil {
		var s []uint64
		start := time.Now()
		for i := range uint64(n) {
			s = append(s, i)
		}
		d := time.Since(start)
		if len(s) != n || s[n-1] != n-1 {
			return 0, 0, fmt.Errorf("slice holds %d elements", len(s))
		}
		return n, d, nil
	}
	v, err := objects.Construct(e.seg, "v", objects.Vector[uint64]{})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := range uint64(n) {
		if err := v.Append(i); err != nil {
			return 0, 0, err
		}
	}
	d := time.Since(start)
	if v.Len() != n || *v.At(n - 1) != n-1 {
		return 0, 0, fmt.Errorf("vector holds %d elements", v.Len())
	}
	return n, d, nil
}

// stringSet sets one string to the two 32-byte values alternately.
func stringSet(e env) (int, time.Duration, error) {
	const n = stringN
	if e.seg == nil {
		// std::string::assign's floor: copy into the buffer already held.
		var b []byte
		start := time.Now()
		for i := range n {
			b = append(b[:0], stringVals[i&1]...)
		}
		d := time.Since(start)
		if string(b) != stringVals[(n-1)&1] {
			return 0, 0, fmt.Errorf("buffer holds %q", b)
		}
		return n, d, nil
	}
	s, err := objects.Construct(e.seg, "s", objects.String{})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := range n {
		if err := s.Set(stringVals[i&1]); err != nil {
			return 0, 0, err
		}
	}
	d := time.Since(start)
	if !s.Equal(stringVals[(n-1)&1]) {
		return 0, 0, fmt.Errorf("string holds %q", s.String())
	}
	return n, d, nil
}

// listPushPop pushes 0..listN-1 at the back, then pops them all from the
// front, checking each; one op is a push and a pop.
func listPushPop(e env) (int, time.Duration, error) {
	const n = listN
	if e.seg == nil {
		l := list.New()
		start := time.Now()
		for i := range uint64(n) {
			l.PushBack(i)
		}
		for i := range uint64(n) {
			f := l.Front()
			if f.Value.(uint64) != i {
				return 0, 0, fmt.Errorf("front holds %v, want %d", f.Value, i)
			}
			l.Remove(f)
		}
		d := time.Since(start)
		if l.Len() != 0 {
			return 0, 0, fmt.Errorf("list holds %d elements", l.Len())
		}
		return n, d, nil
	}
	l, err := objects.Construct(e.seg, "l", objects.List[uint64]{})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := range uint64(n) {
		if _, err := l.PushBack(i); err != nil {
			return 0, 0, err
		}
	}
	for i := range uint64(n) {
		f := l.Front()
		if *f.Value() != i {
			return 0, 0, fmt.Errorf("front holds %d, want %d", *f.Value(), i)
		}
		if err := l.Remove(f); err != nil {
			return 0, 0, err
		}
	}
	d := time.Since(start)
	if l.Len() != 0 {
		return 0, 0, fmt.Errorf("list holds %d elements", l.Len())
	}
	return n, d, nil
}
