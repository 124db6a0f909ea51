package mapped_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "mapped-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "state.seg")

	// The first run creates the segment...
	seg, err := mapped.Open(file.Path(path), mapped.OpenOrCreate, mapped.WithSize(1<<20))
	if err != nil {
		panic(err)
	}
	fmt.Println("created:", seg.RecoveryReport().Created, "size:", seg.Size())
	if err := seg.Close(); err != nil {
		panic(err)
	}

	// ...the next one finds it, closed cleanly.
	seg, err = mapped.Open(file.Path(path), mapped.OpenOrCreate)
	if err != nil {
		panic(err)
	}
	defer seg.Close()
	rep := seg.RecoveryReport()
	fmt.Println("created:", rep.Created, "clean:", rep.Clean(), "found:", rep.State)
	// Output:
	// created: true size: 1048576
	// created: false clean: true found: closed
}

func ExampleSegment_AllocateInto() {
	dir, _ := os.MkdirTemp("", "mapped-example")
	defer os.RemoveAll(dir)
	seg, err := mapped.Open(file.Path(filepath.Join(dir, "state.seg")), mapped.CreateOnly)
	if err != nil {
		panic(err)
	}
	defer seg.Close()

	// A named word in the segment holds the handle of a block: allocating
	// the block and storing its handle is one crash-atomic step, so a
	// crash cannot leak the block.
	root, err := seg.CreateNamed("root", false, mapped.NameSpec{Count: 1, ElemSize: 8}, nil)
	if err != nil {
		panic(err)
	}
	blk, err := seg.AllocateInto(root.Handle, 100)
	if err != nil {
		panic(err)
	}
	copy(blk, "linked from root")

	// Any process can follow the handle.
	h := mapped.Handle(binary.LittleEndian.Uint64(root.Obj))
	again, err := seg.Block(h)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s (%d usable bytes)\n", again[:16], len(again))

	// Freeing it clears the word in the same step.
	if err := seg.DeallocateFrom(root.Handle); err != nil {
		panic(err)
	}
	fmt.Println("word after free:", binary.LittleEndian.Uint64(root.Obj))
	// Output:
	// linked from root (112 usable bytes)
	// word after free: 0
}

func ExampleSegment_CreateNamed() {
	// Shared memory this time: a name under /dev/shm, gone at reboot.
	name := fmt.Sprintf("mapped-example-%d", os.Getpid())
	seg, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(256<<10))
	if err != nil {
		panic(err)
	}
	defer shm.Remove(name)
	defer seg.Close()

	// Three 8-byte counters under one name, filled before the name is
	// published: another process finds all of them or none.
	spec := mapped.NameSpec{Count: 3, ElemSize: 8, Align: 8}
	_, err = seg.CreateNamed("counters", false, spec, func(obj []byte) {
		for i := range 3 {
			binary.LittleEndian.PutUint64(obj[8*i:], uint64(100*(i+1)))
		}
	})
	if err != nil {
		panic(err)
	}

	n, err := seg.LookupNamed("counters", false)
	if err != nil {
		panic(err)
	}
	fmt.Println(n.Name, n.Count, binary.LittleEndian.Uint64(n.Obj[16:]))

	_, err = seg.CreateNamed("counters", false, spec, nil)
	fmt.Println("taken:", errors.Is(err, mapped.ErrExists))
	// Output:
	// counters 3 300
	// taken: true
}
