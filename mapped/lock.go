package mapped

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// segLock is the segment lock: a 32-bit futex word in the segment, shared
// by every process, with a per-process sync.Mutex in front of its slow path
// so that at most one goroutine per process sleeps in FUTEX_WAIT (each one
// there holds an OS thread).
//
// The word (see the manager layout in heap.go):
//
//	bits 0-6   owner: seat (in the attached-process table) + 1; 0 when unlocked
//	bit  7     waiters: someone may sleep in FUTEX_WAIT
//	bits 8-31  acquisition count, so that a takeover cannot mistake a new
//	           owner in a reused seat for the dead one it saw
//
// The owner is identified by its seat, whose liveness is an OFD lock the
// kernel drops when the process dies. A waiter that sees no progress checks
// the owner; if it is dead, the waiter takes the lock over and replays the
// journal before doing anything else.
type segLock struct {
	word    *uint32
	me      uint32 // seat + 1
	private bool   // copy-on-write: the word is private, the mutex is the lock
	mu      sync.Mutex
	// takeover takes the lock, whose word holds v, from its owner in seat
	// owner if that owner is dead, and rolls back its operation. It reports
	// whether it took the lock.
	takeover func(v uint32, owner int) bool
}

const (
	lockOwnerMask = 0x7f
	lockWaiters   = 0x80
	lockSeqOne    = 0x100
	// lockPoll is how long a waiter sleeps before it checks whether the
	// owner is still alive.
	lockPoll = 20 * time.Millisecond
)

func (l *segLock) next(v uint32) uint32 { return (v&^0xff + lockSeqOne) | l.me }

// lock takes the segment lock.
func (l *segLock) lock() {
	if l.private {
		l.mu.Lock()
		return
	}
	v := atomic.LoadUint32(l.word)
	if v&(lockOwnerMask|lockWaiters) == 0 && atomic.CompareAndSwapUint32(l.word, v, l.next(v)) {
		return
	}
	l.lockSlow()
}

func (l *segLock) lockSlow() {
	l.mu.Lock() // one sleeper per process
	defer l.mu.Unlock()
	contended := false
	for spin := 0; ; spin++ {
		v := atomic.LoadUint32(l.word)
		if v&lockOwnerMask == 0 {
			nv := l.next(v)
			if contended {
				nv |= lockWaiters // others may sleep too: our unlock must wake one
			}
			if atomic.CompareAndSwapUint32(l.word, v, nv) {
				return
			}
			continue
		}
		if spin < 50 {
			runtime.Gosched()
			continue
		}
		if v&lockWaiters == 0 {
			if !atomic.CompareAndSwapUint32(l.word, v, v|lockWaiters) {
				continue
			}
			v |= lockWaiters
		}
		contended = true
		if futexWait(l.word, v, lockPoll) {
			continue // woken, or the word changed
		}
		// Timed out with the word unchanged: is the owner alive?
		if l.takeover(v, int(v&lockOwnerMask)-1) {
			return
		}
	}
}

// unlock releases the segment lock and wakes a sleeper if there is one.
func (l *segLock) unlock() {
	if l.private {
		l.mu.Unlock()
		return
	}
	for {
		v := atomic.LoadUint32(l.word)
		if atomic.CompareAndSwapUint32(l.word, v, v&^(lockOwnerMask|lockWaiters)) {
			if v&lockWaiters != 0 {
				futexWake(l.word, 1)
			}
			return
		}
	}
}

// futexWait sleeps while *addr == val, at most d. It reports false when it
// timed out.
func futexWait(addr *uint32, val uint32, d time.Duration) bool {
	ts := unix.NsecToTimespec(int64(d))
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
	return errno != unix.ETIMEDOUT
}

func futexWake(addr *uint32, n int) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, uintptr(n), 0, 0, 0)
}

// futex(2) operations, without FUTEX_PRIVATE_FLAG: the word is shared
// between processes.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

// readBegin starts an optimistic read: it returns the lock word to check
// with readValid, or false when a writer holds the lock (or the lock is
// process-private), and then the reader must take the lock.
func (l *segLock) readBegin() (uint32, bool) {
	if l.private {
		return 0, false
	}
	v := atomic.LoadUint32(l.word)
	return v, v&lockOwnerMask == 0
}

// readValid reports whether no writer took the lock since readBegin
// returned v: every acquisition changes the count in bits 8-31.
func (l *segLock) readValid(v uint32) bool {
	return atomic.LoadUint32(l.word)&^lockWaiters == v&^lockWaiters
}
