// Command map builds an ordered map in a shared memory segment for
// another process to read back in order: the seed's map scenario.
//
// Run with no arguments, it is the parent: it creates a fixed-size 64 KiB
// POSIX shared memory segment, constructs the ordered map "MyMap"
// (objects.Map[int64, float32], a B-tree living in the segment) and
// inserts i -> float32(i) for i in 0..99, in a shuffled order. Then it
// starts itself again as the child, which finds the map by name, reads it
// back in key order and checks every pair, and destroys it. The parent
// checks that the name is gone and the segment's memory is all free, and
// removes the segment.
//
//	go run ./examples/map
//
// It exits with status 0 only if every check held. The child runs as
//
//	map child <shm name>
package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// MyMap is the map of the seed's example: int keys, float values.
type MyMap = objects.Map[int64, float32]

const (
	mapName = "MyMap"
	entries = 100
)

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 3 && os.Args[1] == "child":
		err = child(os.Args[2])
	default:
		err = errors.New("usage: map (no arguments), or map child <shm name>")
	}
	if err != nil {
		role := "map"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-map-%d", os.Getpid())
	// A segment of this name can only be left over from a dead process
	// that had our pid; remove it, as Boost's examples do.
	_ = shm.Remove(name)
	defer func() {
		if rerr := shm.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("remove the segment: %w", rerr)
		}
	}()

	seg, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(64<<10), mapped.WithFixedSize())
	if err != nil {
		return err
	}
	defer seg.Close()
	fmt.Printf("parent: created shm:%s (%d bytes, fixed size)\n", name, seg.Size())

	m, err := objects.Construct(seg, mapName, MyMap{})
	if err != nil {
		return err
	}
	for _, i := range rand.Perm(entries) {
		if err := m.Set(int64(i), float32(i)); err != nil {
			return err
		}
	}
	fmt.Printf("parent: constructed %q and inserted i -> float32(i) for i in 0..%d, shuffled (%d keys)\n", mapName, entries-1, m.Len())

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", name)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	if _, err := objects.Find[MyMap](seg, mapName); !errors.Is(err, mapped.ErrNotFound) {
		return fmt.Errorf("after the child, finding %q gave %v, want mapped.ErrNotFound", mapName, err)
	}
	if !seg.AllMemoryDeallocated() {
		return fmt.Errorf("after the child destroyed the map, AllMemoryDeallocated is false (%d bytes free)", seg.FreeMemory())
	}
	if err := seg.CheckSanity(); err != nil {
		return err
	}
	fmt.Println("parent: OK: the map is gone (mapped.ErrNotFound) and all memory is deallocated")
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("parent: all checks passed; removing the segment")
	return nil
}

func child(name string) error {
	seg, err := mapped.Open(shm.Named(name), mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer seg.Close()

	m, err := objects.Find[MyMap](seg, mapName)
	if err != nil {
		return err
	}
	fmt.Printf("child: found %q with %d keys, mapped at %p\n", mapName, m.Len(), seg.Base())
	next := int64(0)
	for k, v := range m.All() {
		if k != next || *v != float32(next) {
			return fmt.Errorf("in key order, pair %d is %d -> %v, want %d -> %v", next, k, *v, next, float32(next))
		}
		next++
	}
	if next != entries || m.Len() != entries {
		return fmt.Errorf("read %d pairs (Len %d), want %d", next, m.Len(), entries)
	}
	if v, ok := m.Get(42); !ok || *v != 42 {
		return fmt.Errorf("Get(42) = %v, %v; want 42, true", v, ok)
	}
	fmt.Printf("child: OK: read 0 -> 0 .. %d -> %d in key order\n", entries-1, entries-1)

	if err := objects.Destroy[MyMap](seg, mapName); err != nil {
		return err
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Printf("child: destroyed %q and closed the segment\n", mapName)
	return nil
}
