package objects

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Litmus tests of the plain-store Unlock (see Mutex). Two threads meet at
// a round number, then one runs the releasing side and the other the
// waiting side at once, many times, so that the store-buffer window (the
// releaser's store not yet visible when its own load runs) is hit. A
// round is lost when the waiter would go to sleep and nothing will wake
// it. Made without the barrier (futex.Fence a no-op), this test lost
// 2,800 to 25,600 rounds of 200,000 here (with the release delayed by 0
// to 63 loop turns; shorter delays rarely let the waiter in first). On a
// machine too busy to run both threads at once the waiter may never get
// in first: the test then says so and skips (it tested nothing). (The Queue's waiters run the same
// barrier, event.markFenced; a test of that pairing lost only about one
// round in 100,000 without it, too rarely to test here.)

// registered makes this process's Unlocks take the plain-store path.
func registered(t *testing.T, m *Mutex) {
	t.Helper()
	if !plainUnlock {
		t.Skip("Unlock is a compare-and-swap on " + runtime.GOARCH)
	}
	require.NoError(t, m.Lock())
	require.NoError(t, m.Unlock())
	<-fenceDone
	require.True(t, fenced.Load(), "registered for the barrier")
}

// litmusBudget bounds a litmus test's rounds in time: with a busy
// machine, a round whose other thread is not running waits for it.
const litmusBudget = 8 * time.Second

// spinUntil waits for cond, giving the core away now and then (the thread
// it waits for may be waiting for this core).
func spinUntil(cond func() bool) {
	for j := 1; !cond(); j++ {
		if j%1024 == 0 {
			_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		}
	}
}

// The holder's fast Unlock against a waiter's steps before it sleeps
// (Mutex.prepareSleep): when the waiter goes to sleep, the Unlock must
// have seen bit 63 (and cleared it, waking a sleeper).
func TestMutexPlainUnlockLitmus(t *testing.T) {
	seg, _ := syncSeg(t)
	type shared struct {
		Mu Mutex
		_  [56]byte
	}
	sh, err := Construct(seg, "litmus", shared{})
	require.NoError(t, err)
	registered(t, &sh.Mu)
	me := ownerOf(seg)
	const n = 200000
	var signal, done atomic.Int64
	marked := make([]bool, n+1) // the waiter set bit 63 on the held word
	sleeps := make([]bool, n+1) // and then found it unchanged
	go func() {
		runtime.LockOSThread()
		for i := int64(1); i <= n; i++ {
			spinUntil(func() bool { return signal.Load() >= i })
			if signal.Load() > n {
				return
			}
			if v := atomic.LoadUint64(&sh.Mu.w); holderOf(v) != 0 {
				var w uint64
				w, _, sleeps[i] = sh.Mu.prepareSleep(v)
				marked[i] = w != 0
			}
			done.Store(i)
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	deadline := time.Now().Add(litmusBudget)
	rounds, mark, slept, lost := 0, 0, 0, 0
	for i := int64(1); i <= n && time.Now().Before(deadline); i++ {
		atomic.StoreUint64(&sh.Mu.w, me) // held by this open, no sleepers
		signal.Store(i)
		for j := 0; j < int(i%64); j++ { // vary the alignment (0 to about 20 ns)
		}
		if err := sh.Mu.Unlock(); err != nil {
			t.Fatal(err)
		}
		spinUntil(func() bool { return done.Load() == i })
		rounds++
		if marked[i] {
			mark++
		}
		if sleeps[i] {
			slept++
			if atomic.LoadUint64(&sh.Mu.w)&lockWaiters != 0 {
				lost++ // the Unlock did not see the bit: nobody wakes the waiter
			}
		}
	}
	signal.Store(n + 1)
	atomic.StoreUint64(&sh.Mu.w, 0)
	t.Logf("%d rounds: the waiter set bit 63 on the held word in %d, went to sleep in %d, with no wake-up coming in %d", rounds, mark, slept, lost)
	assert.Zero(t, lost, "a sleeper would miss its wake-up")
	if mark == 0 {
		// A busy machine that never ran the two threads at once: nothing
		// was tested (not a pass).
		t.Skipf("in %d rounds the waiter never got in before the Unlock: the threads did not run at the same time", rounds)
	}
}
