// Command vector builds a vector in a shared memory segment for another
// process to sort and destroy: the seed's vector scenario.
//
// Run with no arguments, it is the parent: it creates a fixed-size 64 KiB
// POSIX shared memory segment, constructs the vector "MyVector"
// (objects.Vector[int32]) in it and appends 0..99. Then it starts itself
// again as the child, which finds the vector by name, sorts it in reverse
// order in place (slices.SortFunc on its Slice view: the elements never
// leave the segment), checks it holds 99..0, and destroys it. The parent
// checks that the name is gone and the segment's memory is all free, and
// removes the segment.
//
//	go run ./examples/vector
//
// It exits with status 0 only if every check held. The child runs as
//
//	vector child <shm name>
package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// MyVector is the vector of the seed's example: its storage is a block of
// the segment, and the vector itself lives in the segment, by name.
type MyVector = objects.Vector[int32]

const vectorName = "MyVector"

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 3 && os.Args[1] == "child":
		err = child(os.Args[2])
	default:
		err = errors.New("usage: vector (no arguments), or vector child <shm name>")
	}
	if err != nil {
		role := "vector"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-vector-%d", os.Getpid())
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

	v, err := objects.Construct(seg, vectorName, MyVector{})
	if err != nil {
		return err
	}
	for i := range int32(100) {
		if err := v.Append(i); err != nil {
			return err
		}
	}
	fmt.Printf("parent: constructed %q and appended 0..99 (length %d, capacity %d)\n", vectorName, v.Len(), v.Cap())

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", name)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	if _, err := objects.Find[MyVector](seg, vectorName); !errors.Is(err, mapped.ErrNotFound) {
		return fmt.Errorf("after the child, finding %q gave %v, want mapped.ErrNotFound", vectorName, err)
	}
	if !seg.AllMemoryDeallocated() {
		return fmt.Errorf("after the child destroyed the vector, AllMemoryDeallocated is false (%d bytes free)", seg.FreeMemory())
	}
	if err := seg.CheckSanity(); err != nil {
		return err
	}
	fmt.Println("parent: OK: the vector is gone (mapped.ErrNotFound) and all memory is deallocated")
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

	v, err := objects.Find[MyVector](seg, vectorName)
	if err != nil {
		return err
	}
	fmt.Printf("child: found %q with %d elements, mapped at %p\n", vectorName, v.Len(), seg.Base())

	// Sort in reverse, in place in the segment.
	slices.SortFunc(v.Slice(), func(a, b int32) int { return cmp.Compare(b, a) })
	if v.Len() != 100 {
		return fmt.Errorf("%q has %d elements, want 100", vectorName, v.Len())
	}
	for i, p := range v.All() {
		if *p != int32(99-i) {
			return fmt.Errorf("after the reverse sort, element %d is %d, want %d", i, *p, 99-i)
		}
	}
	fmt.Printf("child: OK: sorted in reverse, the vector holds 99..0 (first %d, last %d)\n", *v.At(0), *v.At(99))

	if err := objects.Destroy[MyVector](seg, vectorName); err != nil {
		return err
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Printf("child: destroyed %q and closed the segment\n", vectorName)
	return nil
}
