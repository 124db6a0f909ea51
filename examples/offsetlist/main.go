// Command offsetlist builds a linked list in a shared memory segment with
// offset pointers (objects.Ptr), and walks it from another process that
// maps the segment at another address.
//
// Run with no arguments, it is the parent: it creates a POSIX shared
// memory segment and builds a list of 10 nodes in it (node i holds the
// value i), from the named object "list head": objects.NewInto allocates
// each node and links it from the previous one's Ptr in one crash-atomic
// step, so a parent killed half-way leaves a shorter list, never a node
// that nothing points to. A Ptr stores the offset of its target in
// the segment, never an address, so the list means the same in every
// process. Then it starts itself again as the child, which finds the head,
// walks the list checking the values 0 to 9 in order, prints the address
// at which it maps the segment, and frees every node. The parent checks
// that all the memory is free and removes the segment.
//
//	go run ./examples/offsetlist
//
// It exits with status 0 only if every check held. The child runs as
//
//	offsetlist child <shm name> <parent's base address>
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

// listNode is a node of the list. Its Next is an offset pointer: plain
// data, which a Go pointer could not be.
type listNode struct {
	Next  objects.Ptr[listNode]
	Value int64
}

// listHead is the named object through which another process finds the
// list.
type listHead struct {
	Head objects.Ptr[listNode]
}

const (
	headName = "list head"
	nodes    = 10
)

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 4 && os.Args[1] == "child":
		err = child(os.Args[2], os.Args[3])
	default:
		err = errors.New("usage: offsetlist (no arguments), or offsetlist child <shm name> <parent's base address>")
	}
	if err != nil {
		role := "offsetlist"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-offsetlist-%d", os.Getpid())
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
	fmt.Printf("parent: created shm:%s (%d bytes), mapped at %p\n", name, seg.Size(), seg.Base())

	// The head first, so that every node is linked from the segment as
	// soon as it exists: NewInto allocates the node and stores it in the
	// Ptr as one step.
	head, err := objects.Construct(seg, headName, listHead{})
	if err != nil {
		return err
	}
	link := &head.Head
	for i := range nodes {
		n, err := objects.NewInto(link)
		if err != nil {
			return err
		}
		n.Value = int64(i)
		link = &n.Next
	}
	fmt.Printf("parent: linked %d nodes, values 0..%d; %q points to offset %d\n", nodes, nodes-1, headName, head.Head.Offset())

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", name, fmt.Sprintf("%p", seg.Base()))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	if _, err := objects.Find[listHead](seg, headName); !errors.Is(err, mapped.ErrNotFound) {
		return fmt.Errorf("after the child, finding %q gave %v, want mapped.ErrNotFound", headName, err)
	}
	if !seg.AllMemoryDeallocated() {
		return fmt.Errorf("after the child freed the list and destroyed %q, AllMemoryDeallocated is false (%d bytes free)", headName, seg.FreeMemory())
	}
	fmt.Println("parent: OK: the head is destroyed and all memory is deallocated")
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("parent: all checks passed; removing the segment")
	return nil
}

func child(name, parentBase string) error {
	seg, err := mapped.Open(shm.Named(name), mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer seg.Close()
	base := fmt.Sprintf("%p", seg.Base())
	if base != parentBase {
		fmt.Printf("child: mapped the segment at %s, the parent at %s: different addresses, same offsets\n", base, parentBase)
	} else {
		fmt.Printf("child: mapped the segment at %s, the same address as the parent (it usually differs; offsets work either way)\n", base)
	}

	head, err := objects.Find[listHead](seg, headName)
	if err != nil {
		return err
	}
	// Walk the list, checking the values; stop after one node too many in
	// case the list is damaged into a cycle.
	var walked []*listNode
	for n := head.Head.Get(); n != nil; n = n.Next.Get() {
		if len(walked) == nodes {
			return fmt.Errorf("the list is longer than %d nodes", nodes)
		}
		if n.Value != int64(len(walked)) {
			return fmt.Errorf("node %d holds %d, want %d", len(walked), n.Value, len(walked))
		}
		walked = append(walked, n)
	}
	if len(walked) != nodes {
		return fmt.Errorf("the list ends after %d nodes, want %d", len(walked), nodes)
	}
	fmt.Printf("child: OK: walked %d nodes holding 0..%d in order, and the list ends there\n", len(walked), nodes-1)

	// Free the list from the front, unlinking each node from the head
	// before freeing it so that the head never points at freed memory.
	for n := head.Head.Get(); n != nil; n = head.Head.Get() {
		head.Head.Set(n.Next.Get())
		if err := objects.Delete(seg, n); err != nil {
			return err
		}
	}
	if !head.Head.IsNil() {
		return errors.New("the head is not nil after freeing the list")
	}
	if err := objects.Destroy[listHead](seg, headName); err != nil {
		return err
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Printf("child: freed the %d nodes, set the head nil and destroyed %q\n", nodes, headName)
	return nil
}
