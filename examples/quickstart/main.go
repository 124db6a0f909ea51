// Command quickstart opens (or creates) a file segment, records that it was
// opened, and prints what it holds. Run it twice: the second run finds the
// state the first one left.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -path /tmp/other.seg
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

func main() {
	path := flag.String("path", filepath.Join(os.TempDir(), "mapstore-quickstart.seg"), "segment file")
	flag.Parse()
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	seg, err := mapped.Open(file.Path(path), mapped.OpenOrCreate, mapped.WithSize(1<<20))
	if err != nil {
		return err
	}
	defer seg.Close()

	rep := seg.RecoveryReport()
	if rep.Created {
		fmt.Printf("created %s\n", path)
	} else {
		fmt.Printf("opened %s (it was %s when found)\n", path, rep.State)
	}
	if !rep.Clean() && !rep.Created {
		fmt.Println(rep)
	}
	info, err := seg.Info()
	if err != nil {
		return err
	}
	fmt.Printf("size %d bytes, state %s, opened %d times\n", info.Size, info.State, info.Opens)
	return seg.Close()
}
