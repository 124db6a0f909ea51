package objects

import (
	"sync/atomic"

	"github.com/mapstore/mapstore/internal/futex"
)

// event is an event count in a segment: a 32-bit futex word whose bit 0
// says someone may sleep on it and whose other bits count notifications.
// A waiter marks it (mark), looks at its condition again, and sleeps on
// the value mark returned; whoever changes the condition does so first,
// then calls notify, which costs one load when nobody sleeps. The marks
// and the condition's words are sequentially consistent atomics, so
// either the notifier sees the mark or the waiter sees the change: no
// wake-up is lost. A waiter that died leaves at most a mark (one
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
