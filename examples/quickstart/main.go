// Command quickstart opens (or creates) a file segment and keeps two named
// objects in it that persist from one run to the next: a run counter and a
// record of the last run (its time and process id). Each run prints what
// Open found (the recovery report, when there was something to report, and
// the segment's header), then "run N" and what the previous run left. Run it
// twice: the first prints "run 1", the second "run 2" and the state the
// first one left.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -path /tmp/other.seg
//
// The segment is yours alone: by default it lives in your user cache
// directory (~/.cache/mapstore/quickstart.seg on Linux), and each run
// prints where. Remove the file to start again from run 1.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// lastRun is what a run leaves for the next one. It is plain data (no Go
// pointers), so it can live in the segment.
type lastRun struct {
	Unix int64 // when it ran, in seconds since 1970
	PID  int64 // its process id
}

func main() {
	path := flag.String("path", "", "segment file (default: quickstart.seg in your user cache directory)")
	flag.Parse()
	if *path == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, "quickstart: no user cache directory (use -path):", err)
			os.Exit(1)
		}
		dir = filepath.Join(dir, "mapstore")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, "quickstart:", err)
			os.Exit(1)
		}
		*path = filepath.Join(dir, "quickstart.seg")
	}
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

	// Both objects are created on the first run and found on the next.
	runs, err := objects.FindOrConstruct(seg, "runs", uint64(0))
	if err != nil {
		return err
	}
	last, err := objects.FindOrConstruct(seg, "last run", lastRun{})
	if err != nil {
		return err
	}
	// The counter lives in memory every process maps: increment it
	// atomically, in case two runs overlap.
	n := atomic.AddUint64(runs, 1)
	fmt.Printf("run %d\n", n)
	if last.PID == 0 {
		fmt.Println("no previous run recorded")
	} else {
		fmt.Printf("previous run (run %d): pid %d at %s\n", n-1, last.PID, time.Unix(last.Unix, 0).Format(time.RFC3339))
	}
	*last = lastRun{Unix: time.Now().Unix(), PID: int64(os.Getpid())}

	// The writes above went through pointers, which the segment does not
	// see: Flush makes them durable (closing flushes only a segment some
	// call changed, as the first run's constructions did).
	if err := seg.Flush(); err != nil {
		return err
	}
	return seg.Close()
}
