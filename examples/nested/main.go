// Command nested builds containers of containers in a shared memory
// segment for another process to read and destroy: the seed's
// containers-of-containers scenario.
//
// Run with no arguments, it is the parent: it creates a fixed-size 64 KiB
// POSIX shared memory segment and constructs "people", an ordered map
// from a name (a string key) to a Record holding an int, a String and a
// Vector of Strings, all in the segment; it builds each Record where it
// lies (GetOrInsert, then set its fields). Then it starts itself again as
// the child, which finds the map, reads every record in name order and
// checks it, and destroys the map: every string, vector and node inside
// is freed with it. The parent checks that the name is gone and the
// segment's memory is all free, and removes the segment.
//
//	go run ./examples/nested
//
// It exits with status 0 only if every check held. The child runs as
//
//	nested child <shm name>
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

// Record is a map value: an int, a string and a vector of strings, each
// in the segment.
type Record struct {
	ID   int64
	Name objects.String
	Tags objects.Vector[objects.String]
}

// People maps a person's key to their Record.
type People = objects.Map[string, Record]

const (
	mapName = "people"
	people  = 24
)

// key, name and tags are person i's contents (some keys inline, some not).
func key(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("p%02d", i)
	}
	return fmt.Sprintf("person-with-a-longer-key-%02d", i)
}

func name(i int) string { return fmt.Sprintf("Person number %d", i) }

func tags(i int) []string {
	var t []string
	for j := range i % 4 {
		t = append(t, fmt.Sprintf("tag-%d-of-%d", j, i))
	}
	return t
}

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 3 && os.Args[1] == "child":
		err = child(os.Args[2])
	default:
		err = errors.New("usage: nested (no arguments), or nested child <shm name>")
	}
	if err != nil {
		role := "nested"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	shmName := fmt.Sprintf("mapstore-example-nested-%d", os.Getpid())
	// A segment of this name can only be left over from a dead process
	// that had our pid; remove it, as Boost's examples do.
	_ = shm.Remove(shmName)
	defer func() {
		if rerr := shm.Remove(shmName); rerr != nil && err == nil {
			err = fmt.Errorf("remove the segment: %w", rerr)
		}
	}()

	seg, err := mapped.Open(shm.Named(shmName), mapped.CreateOnly, mapped.WithSize(64<<10), mapped.WithFixedSize())
	if err != nil {
		return err
	}
	defer seg.Close()
	fmt.Printf("parent: created shm:%s (%d bytes, fixed size)\n", shmName, seg.Size())

	m, err := objects.Construct(seg, mapName, People{})
	if err != nil {
		return err
	}
	ntags := 0
	for i := range people {
		r, _, err := m.GetOrInsert(key(i)) // a zero Record, built where it lies
		if err != nil {
			return err
		}
		r.ID = int64(i)
		if err := r.Name.Set(name(i)); err != nil {
			return err
		}
		for _, t := range tags(i) {
			if err := r.Tags.Append(objects.String{}); err != nil {
				return err
			}
			if err := r.Tags.At(r.Tags.Len() - 1).Set(t); err != nil {
				return err
			}
			ntags++
		}
	}
	fmt.Printf("parent: constructed %q: %d records, %d tags (%d bytes free)\n", mapName, m.Len(), ntags, seg.FreeMemory())

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", shmName)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	if _, err := objects.Find[People](seg, mapName); !errors.Is(err, mapped.ErrNotFound) {
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

func child(shmName string) error {
	seg, err := mapped.Open(shm.Named(shmName), mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer seg.Close()

	m, err := objects.Find[People](seg, mapName)
	if err != nil {
		return err
	}
	fmt.Printf("child: found %q with %d records, mapped at %p\n", mapName, m.Len(), seg.Base())
	seen, ntags, prev := 0, 0, ""
	for k, r := range m.All() {
		if seen > 0 && k <= prev {
			return fmt.Errorf("keys out of order: %q after %q", k, prev)
		}
		prev = k
		i := int(r.ID)
		if i < 0 || i >= people || key(i) != k {
			return fmt.Errorf("record %q has ID %d", k, r.ID)
		}
		if !r.Name.Equal(name(i)) {
			return fmt.Errorf("record %q has name %q, want %q", k, r.Name.String(), name(i))
		}
		want := tags(i)
		if r.Tags.Len() != len(want) {
			return fmt.Errorf("record %q has %d tags, want %d", k, r.Tags.Len(), len(want))
		}
		for j, t := range r.Tags.All() {
			if !t.Equal(want[j]) {
				return fmt.Errorf("record %q tag %d is %q, want %q", k, j, t.String(), want[j])
			}
		}
		seen++
		ntags += len(want)
	}
	if seen != people {
		return fmt.Errorf("read %d records, want %d", seen, people)
	}
	r, ok := m.Get(key(7))
	if !ok || r.ID != 7 {
		return fmt.Errorf("Get(%q) found %v", key(7), ok)
	}
	fmt.Printf("child: OK: %d records in key order, each with its ID, name and tags (%d tags in all)\n", seen, ntags)

	if err := objects.Destroy[People](seg, mapName); err != nil {
		return err
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Printf("child: destroyed %q (every string, vector and node in it) and closed the segment\n", mapName)
	return nil
}
