// Command named creates named objects in a shared memory segment for
// another process to find, use and destroy.
//
// Run with no arguments, it is the parent: it creates a POSIX shared
// memory segment and constructs three named values of MyType in it, with
// package objects: a single instance, an array of 10 copies of one value,
// and an array of 3 whose element i is MyType{float64(i), i}. Then it
// starts itself again as the child, which finds the three by name, checks
// their element counts (1, 10, 3) and values, and destroys them. The
// parent checks that the names are gone and the segment's memory is all
// free, and removes the segment.
//
//	go run ./examples/named
//
// It exits with status 0 only if every check held. The child runs as
//
//	named child <shm name>
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// MyType is plain data (no Go pointers), so it can live in a segment.
type MyType struct {
	A float64
	B int64
}

const (
	instanceName = "MyType instance"
	arrayName    = "MyType array"
	funcName     = "MyType array from it"
)

// funcElem is element i of the array made by ConstructArrayFunc.
func funcElem(i int) MyType { return MyType{float64(i), int64(i)} }

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 3 && os.Args[1] == "child":
		err = child(os.Args[2])
	default:
		err = errors.New("usage: named (no arguments), or named child <shm name>")
	}
	if err != nil {
		role := "named"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-named-%d", os.Getpid())
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
	fmt.Printf("parent: created shm:%s (%d bytes)\n", name, seg.Size())

	if _, err := objects.Construct(seg, instanceName, MyType{0.0, 0}); err != nil {
		return err
	}
	if _, err := objects.ConstructArray(seg, arrayName, 10, MyType{0.0, 0}); err != nil {
		return err
	}
	if _, err := objects.ConstructArrayFunc(seg, funcName, 3, funcElem); err != nil {
		return err
	}
	fmt.Printf("parent: constructed %q, %q [10] and %q [3]\n", instanceName, arrayName, funcName)

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", name)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	for _, n := range []string{instanceName, arrayName, funcName} {
		if _, err := objects.Find[MyType](seg, n); !errors.Is(err, mapped.ErrNotFound) {
			return fmt.Errorf("after the child, finding %q gave %v, want mapped.ErrNotFound", n, err)
		}
	}
	if n := seg.NamedCount(); n != 0 {
		return fmt.Errorf("after the child, the segment still holds %d names", n)
	}
	if !seg.AllMemoryDeallocated() {
		return fmt.Errorf("after the child destroyed every object, AllMemoryDeallocated is false (%d bytes free)", seg.FreeMemory())
	}
	fmt.Println("parent: OK: the three names are gone (mapped.ErrNotFound) and all memory is deallocated")
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

	// What the directory says: each name's type and element count.
	counts := map[string]int64{}
	for info := range objects.Named(seg) {
		counts[info.Name] = info.Count
		fmt.Printf("child: found %q: %d x %s (%d bytes)\n", info.Name, info.Count, info.Type, info.Size)
	}

	inst, err := objects.Find[MyType](seg, instanceName)
	if err != nil {
		return err
	}
	if *inst != (MyType{0.0, 0}) {
		return fmt.Errorf("%q is %+v, want %+v", instanceName, *inst, MyType{})
	}
	arr, err := objects.FindArray[MyType](seg, arrayName)
	if err != nil {
		return err
	}
	for i, v := range arr {
		if v != (MyType{0.0, 0}) {
			return fmt.Errorf("%q[%d] is %+v, want %+v", arrayName, i, v, MyType{})
		}
	}
	fromFunc, err := objects.FindArray[MyType](seg, funcName)
	if err != nil {
		return err
	}
	for i, v := range fromFunc {
		if v != funcElem(i) {
			return fmt.Errorf("%q[%d] is %+v, want %+v", funcName, i, v, funcElem(i))
		}
	}
	want := map[string]int64{instanceName: 1, arrayName: 10, funcName: 3}
	for n, c := range want {
		if counts[n] != c {
			return fmt.Errorf("%q has %d elements, want %d", n, counts[n], c)
		}
	}
	if len(counts) != len(want) {
		return fmt.Errorf("the segment holds %d names, want %d", len(counts), len(want))
	}
	if len(arr) != 10 || len(fromFunc) != 3 {
		return fmt.Errorf("FindArray gave %d and %d elements, want 10 and 3", len(arr), len(fromFunc))
	}
	fmt.Printf("child: OK: counts are 1, 10, 3; values are {0 0}, 10 x {0 0}, %v\n", fromFunc)

	for _, n := range []string{instanceName, arrayName, funcName} {
		if err := objects.Destroy[MyType](seg, n); err != nil {
			return err
		}
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("child: destroyed the three objects and closed the segment")
	return nil
}
