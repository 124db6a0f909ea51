package objects

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

func msgOf(i int) []byte {
	b := make([]byte, 4+i%13)
	binary.LittleEndian.PutUint32(b, uint32(i))
	for j := 4; j < len(b); j++ {
		b[j] = byte(i + j)
	}
	return b
}

func TestQueueOrderAndPriority(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 16, MaxMsgs: 8})
	require.NoError(t, err)
	assert.Equal(t, 8, q.Cap())
	assert.Equal(t, 16, q.MaxMsgSize())
	_, err = ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 16, MaxMsgs: 8})
	assert.ErrorIs(t, err, mapped.ErrExists)

	// Priorities 1, 3, 1, 2, 3, 0, 3: out in priority order, FIFO within.
	sent := []struct {
		msg  string
		prio uint32
	}{{"a", 1}, {"b", 3}, {"c", 1}, {"d", 2}, {"e", 3}, {"f", 0}, {"g", 3}}
	for _, s := range sent {
		require.NoError(t, q.Send([]byte(s.msg), s.prio))
	}
	assert.Equal(t, 7, q.Len())
	var got string
	var prios []uint32
	buf := make([]byte, 16)
	for q.Len() > 0 {
		n, p, err := q.Receive(buf)
		require.NoError(t, err)
		got += string(buf[:n])
		prios = append(prios, p)
	}
	assert.Equal(t, "begdacf", got)
	assert.Equal(t, []uint32{3, 3, 3, 2, 1, 1, 0}, prios)

	// Many rounds through the ring, all one priority: FIFO.
	next := 0
	for i := range 100 {
		require.NoError(t, q.Send(msgOf(i), 5))
		if i%3 == 2 {
			for range 3 {
				n, _, err := q.Receive(buf)
				require.NoError(t, err)
				require.Equal(t, msgOf(next), buf[:n])
				next++
			}
		}
	}
}

func TestQueueSizes(t *testing.T) {
	seg, path := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 100, MaxMsgs: 4})
	require.NoError(t, err)
	big := make([]byte, 100)
	for i := range big {
		big[i] = byte(i)
	}
	require.NoError(t, q.Send(nil, 0), "zero-length")
	require.NoError(t, q.Send(big, 0), "maximum size")
	err = q.Send(make([]byte, 101), 0)
	require.ErrorIs(t, err, ErrMsgSize, "over the maximum")
	ok, err := q.TrySend(make([]byte, 101), 0)
	require.ErrorIs(t, err, ErrMsgSize)
	assert.False(t, ok)
	assert.Equal(t, 2, q.Len())

	n, _, err := q.Receive(make([]byte, 100))
	require.NoError(t, err)
	assert.Zero(t, n)
	_, _, err = q.Receive(make([]byte, 99))
	require.ErrorIs(t, err, ErrMsgSize, "buffer too short")
	require.ErrorIs(t, err, io.ErrShortBuffer)
	assert.Equal(t, 1, q.Len(), "still queued")
	buf := make([]byte, 100)
	n, _, err = q.Receive(buf)
	require.NoError(t, err)
	assert.Equal(t, big, buf[:n])

	for _, cfg := range []QueueConfig{{-1, 1}, {1, 0}, {1 << 25, 1}, {1, 1 << 25}} {
		_, err := ConstructQueue(seg, "bad", cfg)
		assert.ErrorIs(t, err, mapped.ErrInvalidSize, "%+v", cfg)
	}

	// Messages survive a restart (file backing).
	require.NoError(t, q.Send([]byte("kept"), 7))
	require.NoError(t, seg.Close())
	seg2 := reopen(t, path, mapped.OpenOnly)
	q2, err := FindQueue(seg2, "q")
	require.NoError(t, err)
	n, p, err := q2.Receive(buf)
	require.NoError(t, err)
	assert.Equal(t, "kept", string(buf[:n]))
	assert.Equal(t, uint32(7), p)
}

func TestQueueBlockingAndContext(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 2})
	require.NoError(t, err)
	buf := make([]byte, 8)

	_, _, ok, err := q.TryReceive(buf)
	require.NoError(t, err)
	assert.False(t, ok, "empty")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err = q.ReceiveContext(ctx, buf)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// A receiver blocked on the empty queue gets the next message.
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 8)
		n, _, err := q.Receive(b)
		assert.NoError(t, err)
		got <- string(b[:n])
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, q.Send([]byte("x"), 0))
	assert.Equal(t, "x", <-got)

	require.NoError(t, q.Send([]byte("1"), 0))
	ok, err = q.TrySend([]byte("2"), 0)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = q.TrySend([]byte("3"), 0)
	require.NoError(t, err)
	assert.False(t, ok, "full")
	ctx, cancel = context.WithCancel(context.Background())
	sent := make(chan error, 1)
	go func() { sent <- q.SendContext(ctx, []byte("3"), 0) }()
	cancel()
	assert.ErrorIs(t, <-sent, context.Canceled)
	assert.Equal(t, 2, q.Len(), "a cancelled send queues nothing")

	// A sender blocked on the full queue goes on once a message leaves.
	var done atomic.Bool
	go func() { sent <- q.Send([]byte("4"), 9); done.Store(true) }()
	time.Sleep(20 * time.Millisecond)
	assert.False(t, done.Load(), "full: the sender waits")
	n, _, err := q.Receive(buf)
	require.NoError(t, err)
	assert.Equal(t, "1", string(buf[:n]))
	require.NoError(t, <-sent)
	n, p, err := q.Receive(buf)
	require.NoError(t, err)
	assert.Equal(t, "4", string(buf[:n]), "priority 9 first")
	assert.Equal(t, uint32(9), p)
}

func TestQueueReadOnlyAndDamage(t *testing.T) {
	seg, path := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 4})
	require.NoError(t, err)
	require.NoError(t, q.Send([]byte("m"), 0))
	ro := reopen(t, path, mapped.OpenReadOnly)
	rq, err := FindQueue(ro, "q")
	require.NoError(t, err)
	assert.Equal(t, 1, rq.Len())
	assert.ErrorIs(t, rq.Send([]byte("m"), 0), mapped.ErrReadOnly)
	_, _, err = rq.Receive(make([]byte, 8))
	assert.ErrorIs(t, err, mapped.ErrReadOnly)

	_, err = FindQueue(seg, "nope")
	assert.ErrorIs(t, err, mapped.ErrNotFound)
	_, err = Construct(seg, "notq", int64(1))
	require.NoError(t, err)
	_, err = FindQueue(seg, "notq")
	assert.ErrorIs(t, err, ErrTypeMismatch)

	// Damaged words: ErrCorrupt, never a fault or a hang.
	buf := make([]byte, 8)
	for _, damage := range []func(){
		func() { *q.tail = 99 },                           // more queued than the capacity
		func() { *q.head = 5 },                            // the head past the tail
		func() { *q.ring(0) = 1000 },                      // a ring entry naming no slot
		func() { *q.slotAt(0) = 1 << 20 },                 // a length past the maximum
		func() { *q.w(qPending) = 99 | 3<<32 },            // a pending insertion naming no slot
		func() { *q.w(qPendingT), *q.w(qPending) = 3, 1 }, // one from a tail that is not there
	} {
		require.NoError(t, DestroyQueue(seg, "q"))
		q, err = ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 4})
		require.NoError(t, err)
		require.NoError(t, q.Send([]byte("m"), 0))
		damage()
		_, _, err := q.Receive(buf)
		assert.ErrorIs(t, err, mapped.ErrCorrupt)
		_, _ = q.TrySend([]byte("m"), 0) // may or may not see it, but never faults
		for _, mu := range []*Mutex{q.sendMu, q.recvMu} {
			ok, err := mu.TryLock()
			assert.NoError(t, err)
			assert.True(t, ok, "the queue's locks were released")
			assert.NoError(t, mu.Unlock())
		}
	}
}

// Send and Receive allocate nothing per message.
func TestQueueNoAllocation(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 64, MaxMsgs: 16})
	require.NoError(t, err)
	msg, buf := make([]byte, 64), make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := q.Send(msg, 1); err != nil {
			panic(err)
		}
		if _, _, err := q.Receive(buf); err != nil {
			panic(err)
		}
	})
	assert.Zero(t, allocs)
}

// A Send that overtook lower priorities and was cut short in the middle
// of moving the ring (here: after one step, and with the next step's
// store done but not counted) is finished by the next caller, a
// receiver or a sender: the message is queued whole, in its place, and
// nothing is lost. A record whose publish was done is only cleared.
func TestQueueInsertRolledForward(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published bool
		next      string // who comes next: "receive" or "send"
		want      string
	}{
		{"receiver finishes", false, "receive", "Zbcd"},
		{"sender finishes", false, "send", "Zbcde"},
		{"published, receiver clears", true, "receive", "Zbcd"},
		{"published, sender clears", true, "send", "Zbcde"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, _ := syncSeg(t)
			q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 8})
			require.NoError(t, err)
			for _, m := range []string{"a", "b", "c", "d"} {
				require.NoError(t, q.Send([]byte(m), 0))
			}
			buf := make([]byte, 8)
			_, _, err = q.Receive(buf) // head moves off 0: the ring wraps below
			require.NoError(t, err)
			head, tail, err := q.counts("test")
			require.NoError(t, err)
			n := tail - head
			require.Equal(t, uint64(3), n)

			// What overtake does for "Z" at priority 5 (place 0), cut short.
			s, err := q.slotOf("test", tail)
			require.NoError(t, err)
			h := q.slotAt(s)
			*(*byte)(unsafe.Add(unsafe.Pointer(h), 8)) = 'Z'
			*h = 1 | 5<<32
			*q.w(qPendingT), *q.w(qPendingAt) = tail, n
			*q.w(qPending) = (s + 1) | 0<<32
			if tc.published {
				for at := n; at > 0; at-- {
					*q.ring(head + at) = *q.ring(head + at - 1)
				}
				*q.ring(head) = uint32(s)
				*q.w(qPendingAt) = 0
				*q.tail = tail + 1
			} else {
				*q.ring(head + 3) = *q.ring(head + 2) // step 1, counted
				*q.w(qPendingAt) = 2
				*q.ring(head + 2) = *q.ring(head + 1) // step 2, not counted
			}

			if tc.next == "send" {
				require.NoError(t, q.Send([]byte("e"), 0))
			}
			var got string
			for q.Len() > 0 {
				n, _, err := q.Receive(buf)
				require.NoError(t, err)
				got += string(buf[:n])
			}
			assert.Equal(t, tc.want, got)
			assert.Zero(t, *q.w(qPending))
		})
	}
}

// Senders and receivers do not share a lock: with the receive Mutex
// held, a Send that goes last still goes through, and one that would
// overtake (it needs the head to hold still) waits; given up by its
// context, its message is not queued.
func TestQueueSendersDoNotTakeTheReceiveLock(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 8})
	require.NoError(t, err)
	require.NoError(t, q.recvMu.Lock())
	ok, err := q.TrySend([]byte("a"), 1)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = q.TrySend([]byte("b"), 1)
	require.NoError(t, err)
	require.True(t, ok)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = q.SendContext(ctx, []byte("c"), 2)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, q.recvMu.Unlock())
	assert.Equal(t, 2, q.Len())
	buf := make([]byte, 8)
	var got string
	for q.Len() > 0 {
		n, _, err := q.Receive(buf)
		require.NoError(t, err)
		got += string(buf[:n])
	}
	assert.Equal(t, "ab", got)
}

// A queue of the first layout (one Mutex for both sides) is ErrVersion.
func TestQueueOlderLayoutIsErrVersion(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 8})
	require.NoError(t, err)
	*(*uint64)(q.base) = queueMagicV1
	_, err = FindQueue(seg, "q")
	assert.ErrorIs(t, err, mapped.ErrVersion)
	assert.ErrorContains(t, err, `"q"`)
}

// A wait spins qSpinChecks looks until qSpinFails waits in a row slept
// (the other side never got to run meanwhile, as when it shares this
// core), then qSpinMin but for every qSpinRetry-th; a wait that finds
// the queue ready while it spins makes the spins long again.
func TestQueueSpinsShrinkWhereTheyCannotSucceed(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 1})
	require.NoError(t, err)
	_, budget := q.spinBudget(1)
	assert.Equal(t, qSpinChecks, budget)
	buf := make([]byte, 8)
	for i := range qSpinFails + 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, _, err := q.ReceiveContext(ctx, buf) // empty: spins, sleeps, gives up
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, int32(min(i+1, qSpinFails)), q.fails[1].Load())
	}
	long := 0
	for range 2 * qSpinRetry {
		if _, b := q.spinBudget(1); b == qSpinChecks {
			long++
		} else {
			assert.Equal(t, qSpinMin, b)
		}
	}
	assert.Equal(t, 2, long, "every %d-th wait spins long", qSpinRetry)
	assert.Equal(t, int32(0), q.fails[0].Load(), "the other direction is apart")

	// A call that does not wait leaves the count; a wait that finds the
	// queue ready while it spins (here at its first look) clears it.
	require.NoError(t, q.Send([]byte("m"), 0))
	_, _, err = q.Receive(buf)
	require.NoError(t, err)
	assert.Equal(t, int32(qSpinFails), q.fails[1].Load())
	require.NoError(t, q.Send([]byte("m"), 0))
	require.NoError(t, q.await(context.Background(), "test", false))
	assert.Zero(t, q.fails[1].Load())
}

// Random damage to every word that steers an index or a loop (head,
// tail, ring entries, slot headers, the pending record), with boundary
// values: every call returns, ErrCorrupt or not, within its time; none
// faults or hangs, and no lock is left held.
func TestQueueRandomDamageNeverFaultsOrHangs(t *testing.T) {
	seg, _ := syncSeg(t)
	rng := rand.New(rand.NewPCG(9, 9))
	vals := func(c uint64) []uint64 {
		return []uint64{0, 1, 2, c - 1, c, c + 1, 2 * c, 1<<32 - 1, 1 << 32, 1<<32 + 1, 1 << 63, 1<<64 - 1, rng.Uint64()}
	}
	buf := make([]byte, 64)
	for round := range 3000 {
		_ = DestroyQueue(seg, "q")
		c := 1 + rng.IntN(6)
		q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 16, MaxMsgs: c})
		require.NoError(t, err)
		for i := range rng.IntN(c + 1) {
			require.NoError(t, q.Send([]byte("abcdefgh"), uint32(i%3)))
		}
		if rng.IntN(2) == 0 {
			_, _, _, _ = q.TryReceive(buf)
		}
		cap := uint64(c)
		for range 1 + rng.IntN(3) {
			v := vals(cap)[rng.IntN(13)]
			switch rng.IntN(7) {
			case 0:
				*q.tail = v
			case 1:
				*q.head = v
			case 2:
				*q.ring(uint64(rng.IntN(c))) = uint32(v)
			case 3:
				*q.slotAt(uint64(rng.IntN(c))) = v
			case 4:
				*q.w(qPending) = v
			case 5:
				*q.w(qPendingT) = v
			case 6:
				*q.w(qPendingAt) = v
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 4 {
				_ = q.Len()
				_, _ = q.TrySend([]byte("xy"), uint32(rng.IntN(4)))
				_, _, _, _ = q.TryReceive(buf)
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				_, _, _ = q.ReceiveContext(ctx, buf)
				_ = q.SendContext(ctx, []byte("z"), 7)
				cancel()
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a call hung", round)
		}
		for _, mu := range []*Mutex{q.sendMu, q.recvMu} {
			ok, err := mu.TryLock()
			require.NoError(t, err)
			require.True(t, ok, "round %d: a lock left held", round)
			require.NoError(t, mu.Unlock())
		}
	}
}

// A panic in the middle of a Send (here: from the test hook, at the
// overtaking step before the receive Mutex is taken) releases the
// queue's Mutexes and queues nothing.
func TestQueuePanicReleasesTheLocks(t *testing.T) {
	seg, _ := syncSeg(t)
	q, err := ConstructQueue(seg, "q", QueueConfig{MaxMsgSize: 8, MaxMsgs: 4})
	require.NoError(t, err)
	require.NoError(t, q.Send([]byte("a"), 0))
	queueHook = func(string) { panic("cut short") }
	defer func() { queueHook = nil }()
	assert.PanicsWithValue(t, "cut short", func() { _ = q.Send([]byte("b"), 1) }) // overtakes: the hook runs
	queueHook = nil
	for _, mu := range []*Mutex{q.sendMu, q.recvMu} {
		ok, err := mu.TryLock()
		require.NoError(t, err)
		require.True(t, ok, "a lock left held")
		require.NoError(t, mu.Unlock())
	}
	var got string
	buf := make([]byte, 8)
	for q.Len() > 0 {
		n, _, err := q.Receive(buf)
		require.NoError(t, err)
		got += string(buf[:n])
	}
	assert.Equal(t, "a", got, "the panicked Send queued nothing")
}
