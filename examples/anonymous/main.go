// Command anonymous uses a shared memory segment as a pool of anonymous
// blocks, passing a block from one process to another by its handle.
//
// Run with no arguments, it is the parent: it creates a POSIX shared
// memory segment of 64 KiB, allocates a 1024-byte block, writes a message
// in it and starts itself again as the child, giving it the segment's name
// and the block's handle (an offset, the same in every process, wherever
// each maps the segment). The child finds the block from the handle,
// checks the message and frees the block; the parent then checks that the
// segment's free memory is back to what it was before the allocation, and
// removes the segment.
//
//	go run ./examples/anonymous
//
// It exits with status 0 only if every check held. The child runs as
//
//	anonymous child <shm name> <handle>
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
)

const (
	segSize   = 64 << 10
	blockSize = 1024
)

// message is what the parent writes at the start of the block; the child
// looks for exactly this, followed by the pattern fill.
func message(parent int) []byte {
	return fmt.Appendf(nil, "hello from parent %d", parent)
}

// fill is the byte the parent writes in the rest of the block.
func fill(i int) byte { return byte(i*7 + 3) }

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) == 4 && os.Args[1] == "child":
		err = child(os.Args[2], os.Args[3])
	default:
		err = errors.New("usage: anonymous (no arguments), or anonymous child <shm name> <handle>")
	}
	if err != nil {
		role := "anonymous"
		if len(os.Args) > 1 && os.Args[1] == "child" {
			role += " child"
		}
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-anonymous-%d", os.Getpid())
	// A segment of this name can only be left over from a dead process
	// that had our pid; remove it, as Boost's examples do.
	_ = shm.Remove(name)
	defer func() {
		if rerr := shm.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("remove the segment: %w", rerr)
		}
	}()

	seg, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(segSize), mapped.WithFixedSize())
	if err != nil {
		return err
	}
	defer seg.Close()
	fmt.Printf("parent: created shm:%s (%d bytes)\n", name, seg.Size())

	before := seg.FreeMemory()
	block, err := seg.Allocate(blockSize)
	if err != nil {
		return err
	}
	after := seg.FreeMemory()
	if after >= before {
		return fmt.Errorf("free memory did not drop after allocating: %d before, %d after", before, after)
	}
	msg := message(os.Getpid())
	for i := range block {
		block[i] = fill(i)
	}
	copy(block, msg)
	h, err := seg.Handle(block)
	if err != nil {
		return err
	}
	fmt.Printf("parent: allocated %d bytes at handle %s (offset %d), wrote %q; free memory %d -> %d bytes\n",
		len(block), h, h.Offset(), msg, before, after)

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child", name, h.String())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}

	if got := seg.FreeMemory(); got != before {
		return fmt.Errorf("after the child, free memory is %d bytes, want %d (as before the allocation)", got, before)
	}
	if !seg.AllMemoryDeallocated() {
		return errors.New("after the child, the segment still holds a live block")
	}
	fmt.Printf("parent: OK: free memory is back to %d bytes, the child freed the block\n", before)
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("parent: all checks passed; removing the segment")
	return nil
}

func child(name, handle string) error {
	seg, err := mapped.Open(shm.Named(name), mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer seg.Close()

	h, err := mapped.ParseHandle(handle)
	if err != nil {
		return err
	}
	block, err := seg.Block(h)
	if err != nil {
		return err
	}
	if len(block) < blockSize {
		return fmt.Errorf("block at handle %s has %d bytes, want at least %d", h, len(block), blockSize)
	}
	msg := message(os.Getppid())
	if !bytes.HasPrefix(block, msg) {
		return fmt.Errorf("block at handle %s starts with %q, want %q", h, block[:len(msg)], msg)
	}
	for i := len(msg); i < blockSize; i++ {
		if block[i] != fill(i) {
			return fmt.Errorf("block at handle %s: byte %d is %#x, want %#x", h, i, block[i], fill(i))
		}
	}
	fmt.Printf("child: OK: block at handle %s has %d usable bytes and holds %q\n", h, len(block), msg)

	if err := seg.Deallocate(block); err != nil {
		return err
	}
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("child: deallocated the block and closed the segment")
	return nil
}
