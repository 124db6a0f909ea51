package objects

import (
	"sync/atomic"
	"time"

	"github.com/mapstore/mapstore/internal/futex"
)

// event is an event count in a segment: a 32-bit futex word whose bit 0
// says someone may sleep on it and whose other bits count notifications.
// A waiter marks it (mark), looks at its condition again, and sleeps on
// the value mark returned; whoever changes the condition does so first,
// then calls notify, which costs one load when nobody sleeps. Where the
// marks and the condition's words are sequentially consistent atomics,
// either the notifier sees the mark or the waiter sees the change: no
// wake-up is lost (see markFenced for a condition published with a plain
// store). A waiter that died leaves at most a mark (one
// needless wake later).
type event struct{ v uint32 }

// mark sets the sleeper bit and returns the word to sleep on.
func (e *event) mark() uint32 {
	for {
		v := atomic.LoadUint32(&e.v)
		if v&1 != 0 || atomic.CompareAndSwapUint32(&e.v, v, v|1) {
			return v | 1
		}
	}
}

// markFenced is mark for a waiter whose condition is published with a
// plain store (a Queue's head and count word, under a Mutex whose Unlock
// is a plain store too): then nothing orders the notifier's publish
// before notify's load of the word, and both sides could miss each
// other. So it runs the barrier a Mutex waiter runs (futex.Fence; see
// Mutex) after the mark: a registered notifier's publish is visible to
// the waiter's next look, or comes after the barrier, and then its notify
// sees the mark. It returns the word to sleep on and how long at most (a
// refused barrier bounds the sleep as a Mutex waiter's is bounded).
func (e *event) markFenced() (uint32, time.Duration) {
	v := e.mark()
	if futex.Fence() != nil {
		return v, fenceRefusedPoll
	}
	return v, ownerPoll
}

// notify wakes every sleeper, if the word says there may be one.
func (e *event) notify() {
	for {
		v := atomic.LoadUint32(&e.v)
		if v&1 == 0 {
			return
		}
		if atomic.CompareAndSwapUint32(&e.v, v, (v+2)&^1) {
			futex.WakeAll(&e.v)
			return
		}
	}
}
