package examples_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

const runTimeout = 60 * time.Second

// moduleRoot is the directory holding go.mod, found upwards from the
// test's working directory (examples/).
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// build builds ./examples/name into a temporary directory and returns the
// binary's path.
func build(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/"+name)
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

// run runs bin with args and returns its combined output, its pid and its
// error (nil if it exited 0).
func run(t *testing.T, bin string, args ...string) (string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", runTimeout, err)
	}
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	return out.String(), pid, err
}

// mustMatch fails the test for each pattern the output does not match.
func mustMatch(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", p, out)
		}
	}
}

// The parent/child examples: run with no arguments, each starts itself as
// the child, checks what the child did, and removes its segment, named
// after the parent's pid.
func TestParentChild(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"anonymous", []string{
			`^parent: allocated 1024 bytes at handle \d+ `,
			`^child: OK: block at handle \d+ has \d+ usable bytes and holds "hello from parent \d+"$`,
			`^child: deallocated the block and closed the segment$`,
			`^parent: OK: free memory is back to \d+ bytes, the child freed the block$`,
			`^parent: all checks passed; removing the segment$`,
		}},
		{"named", []string{
			`^child: found "MyType instance": 1 x main.MyType `,
			`^child: found "MyType array": 10 x main.MyType `,
			`^child: found "MyType array from it": 3 x main.MyType `,
			`^child: OK: counts are 1, 10, 3; values are \{0 0\}, 10 x \{0 0\}, \[\{0 0\} \{1 1\} \{2 2\}\]$`,
			`^child: destroyed the three objects and closed the segment$`,
			`^parent: OK: the three names are gone \(mapped.ErrNotFound\) and all memory is deallocated$`,
			`^parent: all checks passed; removing the segment$`,
		}},
		{"offsetlist", []string{
			`^parent: linked 10 nodes, values 0\.\.9; `,
			`^child: mapped the segment at 0x[0-9a-f]+, `,
			`^child: OK: walked 10 nodes holding 0\.\.9 in order, and the list ends there$`,
			`^child: freed the 10 nodes, set the head nil and destroyed "list head"$`,
			`^parent: OK: the head is destroyed and all memory is deallocated$`,
			`^parent: all checks passed; removing the segment$`,
		}},
		{"map", []string{
			`^parent: created shm:mapstore-example-map-\d+ \(65536 bytes, fixed size\)$`,
			`^parent: constructed "MyMap" and inserted i -> float32\(i\) for i in 0\.\.99, shuffled \(100 keys\)$`,
			`^child: found "MyMap" with 100 keys, mapped at 0x[0-9a-f]+$`,
			`^child: OK: read 0 -> 0 \.\. 99 -> 99 in key order$`,
			`^child: destroyed "MyMap" and closed the segment$`,
			`^parent: OK: the map is gone \(mapped.ErrNotFound\) and all memory is deallocated$`,
			`^parent: all checks passed; removing the segment$`,
		}},
		{"nested", []string{
			`^parent: constructed "people": 24 records, 36 tags `,
			`^child: found "people" with 24 records, mapped at 0x[0-9a-f]+$`,
			`^child: OK: 24 records in key order, each with its ID, name and tags \(36 tags in all\)$`,
			`^child: destroyed "people" \(every string, vector and node in it\) and closed the segment$`,
			`^parent: OK: the map is gone \(mapped.ErrNotFound\) and all memory is deallocated$`,
			`^parent: all checks passed; removing the segment$`,
		}},
		{"vector", []string{
			`^parent: created shm:mapstore-example-vector-\d+ \(65536 bytes, fixed size\)$`,
			`^parent: constructed "MyVector" and appended 0\.\.99 \(length 100, `,
			`^child: found "MyVector" with 100 elements, mapped at 0x[0-9a-f]+$`,
			`^child: OK: sorted in reverse, the vector holds 99\.\.0 \(first 99, last 0\)$`,
			`^child: destroyed "MyVector" and closed the segment$`,
			`^parent: OK: the vector is gone \(mapped.ErrNotFound\) and all memory is deallocated$`,
			`^parent: all checks passed; removing the segment$`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin := build(t, tc.name)
			out, pid, err := run(t, bin)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, out)
			}
			t.Logf("output:\n%s", out)
			mustMatch(t, out, tc.lines...)
			seg := filepath.Join("/dev/shm", fmt.Sprintf("mapstore-example-%s-%d", tc.name, pid))
			if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was not removed (stat: %v)", seg, err)
			}

			// A child that cannot do its part must fail, and say so.
			args := []string{"child", fmt.Sprintf("mapstore-example-%s-missing-%d", tc.name, os.Getpid()), "1"}
			if tc.name == "named" || tc.name == "vector" || tc.name == "map" || tc.name == "nested" {
				args = args[:2]
			}
			out, _, err = run(t, bin, args...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("child on a missing segment: got %v, want exit status 1\n%s", err, out)
			}
			mustMatch(t, out, `^`+tc.name+` child: FAILED: `)
		})
	}
}

// quickstart keeps its state in a file: the second run finds the first's.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	bin := build(t, "quickstart")
	path := filepath.Join(t.TempDir(), "quickstart.seg")

	out, _, err := run(t, bin, "-path", path)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	t.Logf("first run:\n%s", out)
	mustMatch(t, out,
		`^created `+regexp.QuoteMeta(path)+`$`,
		`^size \d+ bytes, state attached, opened 1 times$`,
		`^run 1$`,
		`^no previous run recorded$`)

	out, _, err = run(t, bin, "-path", path)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	t.Logf("second run:\n%s", out)
	mustMatch(t, out,
		`^opened `+regexp.QuoteMeta(path)+` \(it was closed when found\)$`,
		`^size \d+ bytes, state closed, opened 2 times$`, // in use from its first change on
		`^run 2$`,
		`^previous run \(run 1\): pid \d+ at `)
}

// queue: a producer and a consumer process; the consumer is SIGKILLed
// holding the ledger's lock, and a second one finishes the stream.
func TestQueueExample(t *testing.T) {
	t.Parallel()
	bin := build(t, "queue")
	out, pid, err := run(t, bin)
	if err != nil {
		t.Fatalf("queue: %v\n%s", err, out)
	}
	t.Logf("output:\n%s", out)
	mustMatch(t, out,
		`^parent: created shm:mapstore-example-queue-\d+ with queue "jobs" \(32 messages of up to 64 bytes\)$`,
		`^parent: SIGKILLed the consumer \(pid \d+\) after 700 messages, inside the ledger's critical section; \d+ messages queued$`,
		`^consumer: the ledger's lock was held by a consumer that died: .*lock owner died$`,
		`^producer: sent 2000 messages, priorities 0\.\.2$`,
		`^consumer: the ledger holds all 2000 messages$`,
		`^parent: OK: all 2000 messages received exactly once, in order within each priority; the queue is empty$`,
		`^parent: all checks passed; removing the segment$`)
	seg := filepath.Join("/dev/shm", fmt.Sprintf("mapstore-example-queue-%d", pid))
	if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was not removed (stat: %v)", seg, err)
	}
}

// supervisor: three workers share a Map under a Mutex; worker 0 is
// SIGKILLed holding the lock, most likely inside a Map call; the next
// locker gets ErrOwnerDied and a map that checks out.
func TestSupervisorExample(t *testing.T) {
	t.Parallel()
	bin := build(t, "supervisor")
	out, pid, err := run(t, bin)
	if err != nil {
		t.Fatalf("supervisor: %v\n%s", err, out)
	}
	t.Logf("output:\n%s", out)
	mustMatch(t, out,
		`^supervisor: created shm:mapstore-example-supervisor-\d+ with a Mutex and a Map; starting 3 workers$`,
		`^supervisor: SIGKILLed worker 0 \(pid \d+\) in its round 10, holding the lock$`,
		`(?:^worker [12]|^supervisor): Lock reported ErrOwnerDied`,
		`^worker 1: done, 40 rounds of 200 keys$`,
		`^worker 2: done, 40 rounds of 200 keys$`,
		`^supervisor: OK: workers 1 and 2 set all 8000 keys; worker 0's \d+: 10 whole rounds and a prefix `,
		`^supervisor: OK: destroyed the shared state .* and all memory is deallocated$`,
		`^supervisor: all checks passed; removing the segment$`)
	seg := filepath.Join("/dev/shm", fmt.Sprintf("mapstore-example-supervisor-%d", pid))
	if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was not removed (stat: %v)", seg, err)
	}
}
