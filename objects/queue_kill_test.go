package objects

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// The queue kill test: two sender and two receiver processes run at once
// on a small queue (so both block, on full and on empty) and are SIGKILLed at
// random, one at a time, and replaced. Each logs what it does to a file of
// its own, one write(2) per line (a SIGKILL loses nothing the kernel was
// given, but it can cut a write short where the line crosses a page
// boundary, so the parent reads only lines that end in a newline: a torn
// last line is a step that was not logged): the sender "I seq prio" before a Send and "D seq" after it, the
// receiver "R run seq prio" after each Receive. A message names its
// sender's run and sequence number and carries bytes derived from them,
// which the receiver checks (a torn message exits it with status 1). At
// the end the parent drains the queue and checks the ledger: no message
// received twice, none received that was not sent, every completed Send
// received or still queued, except at most one per receiver kill (the
// message a receiver consumed and was killed before logging: "consumed"),
// and what one receiver took, within a sender and a priority, came out in
// order.

const qkName = "qk"

func qkBody(run, seq uint32, n int) []byte {
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b, run)
	binary.LittleEndian.PutUint32(b[4:], seq)
	for i := 8; i < n; i++ {
		b[i] = byte(run*31 + seq*7 + uint32(i))
	}
	return b
}

func qkOpen(args []string) (*Queue, *os.File, uint32, error) {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		return nil, nil, 0, err
	}
	q, err := FindQueue(seg, qkName)
	if err != nil {
		return nil, nil, 0, err
	}
	log, err := os.OpenFile(args[1], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, 0, err
	}
	run, _ := strconv.ParseUint(args[2], 10, 32)
	return q, log, uint32(run), nil
}

func childQueueSend(args []string) int {
	q, log, run, err := qkOpen(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rng := rand.New(rand.NewPCG(uint64(run), 77))
	// args[3], if there: this sender SIGKILLs itself at one in that many
	// steps of an overtaking insertion (queueHook), where it holds both
	// Mutexes, so that another process rolls the insertion forward.
	if every, _ := strconv.Atoi(append(args, "0")[3]); every > 0 {
		hr := rand.New(rand.NewPCG(uint64(run), 78))
		queueHook = func(string) {
			if hr.IntN(every) == 0 {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	fmt.Println("ready")
	for seq := uint32(0); ; seq++ {
		prio := uint32(rng.IntN(4))
		msg := qkBody(run, seq, 8+rng.IntN(q.MaxMsgSize()-7))
		fmt.Fprintf(log, "I %d %d\n", seq, prio)
		if err := q.Send(msg, prio); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(log, "D %d\n", seq)
		qkLogFinished(log)
	}
}

func childQueueRecv(args []string) int {
	q, log, _, err := qkOpen(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	buf := make([]byte, q.MaxMsgSize())
	fmt.Println("ready")
	for {
		n, prio, err := q.Receive(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		run, seq, ok := qkCheck(buf[:n])
		if !ok {
			fmt.Fprintf(os.Stderr, "torn message %x\n", buf[:n])
			return 1
		}
		fmt.Fprintf(log, "R %d %d %d\n", run, seq, prio)
		qkLogFinished(log)
	}
}

var qkFinishedLogged int64

// qkLogFinished logs "F" when this process finished an insertion that a
// killed sender left half done.
func qkLogFinished(log *os.File) {
	if n := queueFinished.Load(); n > qkFinishedLogged {
		qkFinishedLogged = n
		fmt.Fprintln(log, "F")
	}
}

// qkCheck parses and verifies a message.
func qkCheck(m []byte) (run, seq uint32, ok bool) {
	if len(m) < 8 {
		return 0, 0, false
	}
	run, seq = binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint32(m[4:])
	return run, seq, string(m) == string(qkBody(run, seq, len(m)))
}

type qkMsg struct{ run, seq uint32 }

func TestQueueSIGKILLSendersAndReceivers(t *testing.T) {
	kills := orShortN(200, 40)
	if v := os.Getenv("MAPSTORE_QUEUE_KILLS"); v != "" {
		var err error
		kills, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	t.Run("file", func(t *testing.T) {
		queueKills(t, "file:"+filepath.Join(t.TempDir(), "qk.seg"), kills)
	})
	t.Run("shm", func(t *testing.T) {
		name := fmt.Sprintf("mapstore-qk-%d", os.Getpid())
		t.Cleanup(func() { _ = shm.Remove(name) })
		queueKills(t, "shm:"+name, kills)
	})
}

func queueKills(t *testing.T, spec string, kills int) {
	start := time.Now()
	dir := t.TempDir()
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	defer seg.Close()
	q, err := ConstructQueue(seg, qkName, QueueConfig{MaxMsgSize: 64, MaxMsgs: 16})
	require.NoError(t, err)

	rng := rand.New(rand.NewPCG(15, 15))
	run := uint32(0)
	type side struct {
		child *proctest.Child
		logs  []string
		runs  []uint32
		kills int
		every string // the sender kills itself at one in every overtaking step
	}
	// Two senders and two receivers, so that each side's Mutex is
	// contended and found dead by another process of the same side; the
	// second sender also SIGKILLs itself now and then while it holds both
	// Mutexes in an overtaking insertion, which the others finish.
	sides := make([]side, 4)
	sides[1].every = "40"
	names := []string{"qsend", "qsend", "qrecv", "qrecv"}
	startSide := func(s *side, name string) {
		run++
		log := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, run))
		s.child = proctest.Start(t, name, spec, log, strconv.Itoa(int(run)), cmp.Or(s.every, "0"))
		s.child.Expect("ready")
		s.logs, s.runs = append(s.logs, log), append(s.runs, run)
	}
	for i := range sides {
		startSide(&sides[i], names[i])
	}
	selfKills := 0
	for range kills {
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		for i := range sides {
			if s := &sides[i]; s.every != "" && s.child.Exited() {
				if code := s.child.Cmd.ProcessState.ExitCode(); code != -1 {
					t.Fatalf("%s exited %d: %s", names[i], code, s.child.Stderr())
				}
				selfKills++
				startSide(s, names[i])
			}
		}
		i := rng.IntN(len(sides))
		s, name := &sides[i], names[i]
		s.child.Kill()
		if code := s.child.Cmd.ProcessState.ExitCode(); code != -1 {
			t.Fatalf("%s exited %d before it was killed: %s", name, code, s.child.Stderr())
		}
		s.kills++
		startSide(s, name)
	}
	for i := range sides {
		sides[i].child.Kill()
		if code := sides[i].child.Cmd.ProcessState.ExitCode(); code != -1 {
			t.Fatalf("a child exited %d: %s", code, sides[i].child.Stderr())
		}
	}
	var send, recv side
	for i := range sides {
		d := &send
		if names[i] == "qrecv" {
			d = &recv
		}
		d.logs, d.runs = append(d.logs, sides[i].logs...), append(d.runs, sides[i].runs...)
		d.kills += sides[i].kills
	}

	// The ledger.
	intended := map[qkMsg]uint32{} // prio
	finished := 0                  // insertions finished for a killed sender
	completed := map[qkMsg]bool{}
	for i, log := range send.logs {
		for _, f := range qkLines(t, log) {
			if f[0] == "F" {
				finished++
				continue
			}
			seq, _ := strconv.ParseUint(f[1], 10, 32)
			m := qkMsg{send.runs[i], uint32(seq)}
			switch f[0] {
			case "I":
				p, _ := strconv.ParseUint(f[2], 10, 32)
				intended[m] = uint32(p)
			case "D":
				completed[m] = true
			}
		}
	}
	received := map[qkMsg]int{}
	var orders [][]qkMsg // what each receiver took, in its order
	note := func(m qkMsg, prio uint32) {
		received[m]++
		orders[len(orders)-1] = append(orders[len(orders)-1], m)
		p, ok := intended[m]
		require.True(t, ok, "received %v, which no sender meant to send", m)
		require.Equal(t, p, prio, "%v's priority", m)
	}
	logged := 0
	for _, log := range recv.logs {
		orders = append(orders, nil)
		for _, f := range qkLines(t, log) {
			if f[0] == "F" {
				finished++
				continue
			}
			logged++
			r, _ := strconv.ParseUint(f[1], 10, 32)
			s, _ := strconv.ParseUint(f[2], 10, 32)
			p, _ := strconv.ParseUint(f[3], 10, 32)
			note(qkMsg{uint32(r), uint32(s)}, uint32(p))
		}
	}
	queued := q.Len()
	orders = append(orders, nil)
	buf := make([]byte, 64)
	for q.Len() > 0 {
		n, p, err := q.Receive(buf)
		require.NoError(t, err)
		r, s, ok := qkCheck(buf[:n])
		require.True(t, ok, "torn message left queued: %x", buf[:n])
		note(qkMsg{r, s}, p)
	}
	for m, c := range received {
		require.Equal(t, 1, c, "%v received %d times", m, c)
	}
	consumed := 0
	for m := range completed {
		if received[m] == 0 {
			consumed++
		}
	}
	assert.LessOrEqual(t, consumed, recv.kills, "completed sends neither received nor queued: at most one per receiver kill")
	cut := 0
	for m := range intended {
		if !completed[m] && received[m] == 1 {
			cut++
		}
	}
	// Order: what one receiver took, within one sender run and one
	// priority, has rising sequence numbers.
	for _, order := range orders {
		last := map[[2]uint32]int64{}
		for _, m := range order {
			k := [2]uint32{m.run, intended[m]}
			prev, ok := last[k]
			require.True(t, !ok || int64(m.seq) > prev, "%v out of order after seq %d", m, prev)
			last[k] = int64(m.seq)
		}
	}
	require.NoError(t, seg.CheckSanity())
	t.Logf("%s: %d kills (%d senders, %d receivers) in %v: %d messages sent, %d received and logged, %d left queued; %d sends cut short yet delivered whole; %d consumed by a receiver killed before it logged them; a sender killed itself %d times in an overtaking insertion, and %d insertions a killed sender left half done were finished by another process",
		spec[:strings.IndexByte(spec, ':')], kills, send.kills, recv.kills, time.Since(start).Round(time.Millisecond), len(completed), logged, queued, cut, consumed, selfKills, finished)
	assert.Positive(t, logged)
	if !testing.Short() && kills >= 200 {
		assert.Positive(t, finished, "a killed sender's insertion was finished by another process")
	}
}

func qkLines(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return qkParse(b)
}

// qkParse splits a child's log into the fields of its complete lines; what
// follows the last newline is a line whose write a SIGKILL cut short.
func qkParse(b []byte) [][]string {
	var out [][]string
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return out
		}
		if fs := strings.Fields(string(b[:i])); len(fs) > 0 {
			out = append(out, fs)
		}
		b = b[i+1:]
	}
}

func TestQkParseDropsATornLastLine(t *testing.T) {
	assert.Equal(t, [][]string{{"R", "1", "2", "3"}}, qkParse([]byte("R 1 2 3\nR 1 2")))
	assert.Equal(t, [][]string{{"I", "4", "0"}, {"D", "4"}}, qkParse([]byte("I 4 0\nD 4\n")))
}

// childQueueOvertake sends "Z" at priority 5 to the queue qo, which holds
// lower priorities, and kills itself at the given step of the overtaking
// insertion (queueHook).
func childQueueOvertake(args []string) int {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	q, err := FindQueue(seg, "qo")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	step := args[1]
	queueHook = func(s string) {
		if s == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	if err := q.Send([]byte("Z"), 5); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "the send was not killed")
	return 1
}

// A sender SIGKILLed at each step of an overtaking Send, holding both of
// the queue's Mutexes: the next caller, a receiver or a sender, finds the
// Mutexes dead, and the message is queued whole in its place if the
// insertion was recorded (rolled forward), or not at all; nothing else
// is lost or reordered.
func TestQueueOvertakeKilledAtEachStep(t *testing.T) {
	for _, tc := range []struct {
		step     string
		queued   bool // the message comes out
		finished bool // the next caller finished the insertion
	}{
		{"written", false, false},
		{"recorded", true, true},
		{"moved", true, true},
		{"published", true, true},
	} {
		for _, next := range []string{"receive", "send"} {
			t.Run(tc.step+"/"+next, func(t *testing.T) {
				spec := "file:" + filepath.Join(t.TempDir(), "qo.seg")
				seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(1<<20))
				require.NoError(t, err)
				defer seg.Close()
				q, err := ConstructQueue(seg, "qo", QueueConfig{MaxMsgSize: 8, MaxMsgs: 8})
				require.NoError(t, err)
				buf := make([]byte, 8)
				for _, m := range []string{"x", "a", "b", "c"} {
					require.NoError(t, q.Send([]byte(m), 0))
				}
				_, _, err = q.Receive(buf) // the head off 0: the ring wraps
				require.NoError(t, err)

				c := proctest.Start(t, "qovertake", spec, tc.step)
				require.Error(t, c.Cmd.Wait())
				require.Equal(t, -1, c.Cmd.ProcessState.ExitCode(), "killed: %s", c.Stderr())

				before := queueFinished.Load()
				want := "abc"
				if tc.queued {
					want = "Zabc"
				}
				if next == "send" {
					require.NoError(t, q.Send([]byte("e"), 0))
					want += "e"
				}
				var got string
				for q.Len() > 0 {
					n, _, err := q.Receive(buf)
					require.NoError(t, err)
					got += string(buf[:n])
				}
				assert.Equal(t, want, got)
				assert.Equal(t, tc.finished, queueFinished.Load() > before, "the insertion was finished here")
				assert.Zero(t, *q.w(qPending))
				require.NoError(t, seg.CheckSanity())
			})
		}
	}
}
