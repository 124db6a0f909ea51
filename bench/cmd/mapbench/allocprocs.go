package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapstore/mapstore/mapped"
)

// alloc_free_64_2procs (issue 17, allocation that scales with
// processes): two processes, this one and mapbench -child, each allocate
// and free a 64-byte block allocFreeN times on the one segment, started
// together. Before that, on the same segment, this process runs
// alloc_free_64's loop alone, so that the two-process rate is set
// against the one-process rate of the same moment.
//
// The result line's n and ns_per_op are per process: allocFreeN, and the
// mean over the two processes of the time of its loop divided by
// allocFreeN. Its fields:
//
//	total_mops     million pairs per second of both together: 2*allocFreeN
//	               over the time from the first loop's start to the last
//	               one's end
//	one_proc_mops  million pairs per second of alloc_free_64's loop, alone
//	scaling        total_mops / one_proc_mops (issue 17's target: 1.6)
//	p1_ns_per_op   this process's loop time / allocFreeN
//	p2_ns_per_op   the child's
//	start_skew_us  how much later the later loop started, in microseconds
const allocProcsCase = "alloc_free_64_2procs"

// monoNow is CLOCK_MONOTONIC in nanoseconds, one clock for every process
// of the machine (time.Now's monotonic reading counts from this
// process's start), so that the two processes' times can be set side by
// side.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

func allocFree64Procs(e env) (int, time.Duration, error) {
	n1, d1, err := allocFree64(e)
	if err != nil {
		return 0, 0, err
	}
	c, err := startChild(allocProcsCase, e.b, allocFreeN)
	if err != nil {
		return 0, 0, err
	}
	// The start barrier: the child is ready (the segment open, one pair
	// done) and blocks reading its stdin; both loops start at the go line.
	if _, err := io.WriteString(c.in, "go\n"); err != nil {
		c.stop()
		return 0, 0, err
	}
	p0 := monoNow()
	err = allocFreeLoop(e.seg, allocFreeN)
	p1 := monoNow()
	if err != nil {
		c.stop()
		return 0, 0, err
	}
	line, err := c.out.ReadString('\n')
	var c0, c1 int64
	if err == nil {
		_, err = fmt.Sscanf(line, "done %d %d\n", &c0, &c1)
	}
	if err != nil {
		c.stop()
		return 0, 0, fmt.Errorf("child's result %q: %v", line, err)
	}
	if err := c.Wait(); err != nil {
		return 0, 0, err
	}
	span := max(p1, c1) - min(p0, c0)
	total := 2 * allocFreeN / float64(span) * 1e3
	one := float64(n1) / float64(d1.Nanoseconds()) * 1e3
	e.field("total_mops", total)
	e.field("one_proc_mops", one)
	e.field("scaling", total/one)
	e.field("p1_ns_per_op", float64(p1-p0)/allocFreeN)
	e.field("p2_ns_per_op", float64(c1-c0)/allocFreeN)
	e.field("start_skew_us", float64(max(p0, c0)-min(p0, c0))/1e3)
	return allocFreeN, time.Duration((p1 - p0 + c1 - c0) / 2), nil
}

// allocProcsChild is the second process of alloc_free_64_2procs, on the
// segment s: it does one pair, says "ready", waits for the "go" line on
// its stdin, runs its n pairs and prints "done <start> <end>" (monoNow).
func allocProcsChild(s *mapped.Segment, n int) error {
	if err := allocFreeLoop(s, 1); err != nil {
		return err
	}
	fmt.Println("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil || line != "go\n" {
		return fmt.Errorf("waiting for go: %q, %v", line, err)
	}
	t0 := monoNow()
	if err := allocFreeLoop(s, n); err != nil {
		return err
	}
	t1 := monoNow()
	fmt.Printf("done %d %d\n", t0, t1)
	return nil
}
