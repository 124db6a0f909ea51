package main

// The ordered-map cases (bench/README.md): map_insert and map_find, and
// the map that open_existing and close_existing reopen. The segment side
// is an objects.Map[uint64, float64] constructed by name, as the C++ side
// constructs a boost::interprocess::map<uint64_t, double> by name. The Go
// standard library has no ordered map, so the heap floor is Go's built-in
// map[uint64]float64 (hashed, not ordered: a lower floor than the C++
// side's std::map).

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/mapstore/mapstore/objects"
)

const (
	mapN     = 1_000_000 // map_insert: keys inserted
	mapFindN = 1_000_000 // map_find: finds
	mapName  = "map"
)

// mapKeys is n distinct random uint64s in generation order, and mapFindN
// random indices into them (uint32, as the C++ side's), from a fixed
// seed.
func mapKeys() (keys []uint64, idx []uint32) {
	rng := rand.New(rand.NewPCG(42, 4))
	keys = make([]uint64, 0, mapN)
	seen := make(map[uint64]struct{}, mapN)
	for len(keys) < mapN {
		k := rng.Uint64()
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			keys = append(keys, k)
		}
	}
	idx = make([]uint32, mapFindN)
	for i := range idx {
		idx[i] = uint32(rng.IntN(mapN))
	}
	return keys, idx
}

// segMap is what the map cases use of objects.Map[uint64, float64] and
// objects.HashMap[uint64, float64].
type segMap interface {
	Set(k uint64, v float64) error
	Get(k uint64) (*float64, bool)
	Len() int
}

// fillMap constructs the map by name and sets keys[i] -> float64(i).
func fillMap(e env, keys []uint64) (*objects.Map[uint64, float64], error) {
	m, err := objects.Construct(e.seg, mapName, objects.Map[uint64, float64]{})
	if err != nil {
		return nil, err
	}
	if err := setAll(m, keys); err != nil {
		return nil, err
	}
	return m, nil
}

func setAll(m segMap, keys []uint64) error {
	for i, k := range keys {
		if err := m.Set(k, float64(i)); err != nil {
			return err
		}
	}
	if m.Len() != len(keys) {
		return fmt.Errorf("map holds %d keys, want %d", m.Len(), len(keys))
	}
	return nil
}

func fillHeap(keys []uint64) map[uint64]float64 {
	h := make(map[uint64]float64) // no size hint: std::map has none
	for i, k := range keys {
		h[k] = float64(i)
	}
	return h
}

// newMap and newHashMap construct the map of a case by name.
func newMap(e env) (segMap, error) {
	return objects.Construct(e.seg, mapName, objects.Map[uint64, float64]{})
}

func newHashMap(e env) (segMap, error) {
	return objects.Construct(e.seg, "hashmap", objects.HashMap[uint64, float64]{})
}

// mapInsert inserts mapN distinct random keys into an empty map.
func mapInsert(e env) (int, time.Duration, error) { return timedInsert(e, newMap) }

// mapFind, after map_insert's inserts (untimed), finds mapFindN random
// present keys and sums their values (checked).
func mapFind(e env) (int, time.Duration, error) { return timedFind(e, newMap) }

// hashMapInsert and hashMapFind are map_insert and map_find on an
// objects.HashMap[uint64, float64] constructed by name (the C++ side: a
// boost::unordered_map with the segment's allocator); the heap floor is
// Go's map for both.
func hashMapInsert(e env) (int, time.Duration, error) { return timedInsert(e, newHashMap) }

func hashMapFind(e env) (int, time.Duration, error) { return timedFind(e, newHashMap) }

func timedInsert(e env, newM func(env) (segMap, error)) (int, time.Duration, error) {
	keys, _ := mapKeys()
	if e.seg == nil {
		start := time.Now()
		h := fillHeap(keys)
		d := time.Since(start)
		if len(h) != mapN {
			return 0, 0, fmt.Errorf("map holds %d keys", len(h))
		}
		return mapN, d, nil
	}
	m, err := newM(e)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	err = setAll(m, keys)
	return mapN, time.Since(start), err
}

func timedFind(e env, newM func(env) (segMap, error)) (int, time.Duration, error) {
	keys, idx := mapKeys()
	var want, sum float64
	for _, i := range idx {
		want += float64(i)
	}
	var d time.Duration
	if e.seg == nil {
		h := fillHeap(keys)
		start := time.Now()
		for _, i := range idx {
			v, ok := h[keys[i]]
			if !ok {
				return 0, 0, fmt.Errorf("key %d not found", keys[i])
			}
			sum += v
		}
		d = time.Since(start)
	} else {
		m, err := newM(e)
		if err != nil {
			return 0, 0, err
		}
		if err := setAll(m, keys); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		for _, i := range idx {
			v, ok := m.Get(keys[i])
			if !ok {
				return 0, 0, fmt.Errorf("key %d not found", keys[i])
			}
			sum += *v
		}
		d = time.Since(start)
	}
	if sum != want {
		return 0, 0, fmt.Errorf("checksum %g, want %g", sum, want)
	}
	return mapFindN, d, nil
}
