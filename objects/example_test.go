package objects_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

type account struct {
	ID      int64
	Balance float64
}

func Example() {
	dir, _ := os.MkdirTemp("", "objects-example")
	defer os.RemoveAll(dir)
	seg, err := mapped.Open(file.Path(filepath.Join(dir, "state.seg")), mapped.CreateOnly, mapped.WithSize(1<<20))
	if err != nil {
		panic(err)
	}
	defer seg.Close()

	if _, err := objects.Construct(seg, "alice", account{ID: 1, Balance: 10}); err != nil {
		panic(err)
	}
	if _, err := objects.ConstructArrayFunc(seg, "history", 3, func(i int) float64 { return float64(i) * 2.5 }); err != nil {
		panic(err)
	}

	a, _ := objects.Find[account](seg, "alice")
	a.Balance += 5 // a write straight into the segment
	h, _ := objects.FindArray[float64](seg, "history")
	fmt.Println(a.ID, a.Balance, h)

	_, err = objects.Find[int64](seg, "alice")
	fmt.Println(errors.Is(err, objects.ErrTypeMismatch))
	_, err = objects.Construct(seg, "alice", account{})
	fmt.Println(errors.Is(err, mapped.ErrExists))
	_, err = objects.Construct(seg, "bob", struct{ Name string }{"bob"})
	fmt.Println(errors.Is(err, objects.ErrNotPlainData))
	// Output:
	// 1 15 [0 2.5 5]
	// true
	// true
	// true
}

type node struct {
	Next  objects.Ptr[node]
	Value int64
}

func ExamplePtr() {
	dir, _ := os.MkdirTemp("", "objects-example")
	defer os.RemoveAll(dir)
	seg, err := mapped.Open(file.Path(filepath.Join(dir, "list.seg")), mapped.CreateOnly, mapped.WithSize(1<<20))
	if err != nil {
		panic(err)
	}
	defer seg.Close()

	head, _ := objects.Construct(seg, "head", node{Value: 0})
	tail := head
	for i := int64(1); i <= 3; i++ {
		n, _ := objects.New[node](seg)
		n.Value = i * 10
		tail.Next.Set(n)
		tail = n
	}
	for n := head; n != nil; n = n.Next.Get() {
		fmt.Print(n.Value, " ")
	}
	fmt.Println()
	// Output: 0 10 20 30
}
