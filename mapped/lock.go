package mapped

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// segLock is the segment lock: a 64-bit word in the segment, shared by
// every process, whose low 32 bits are a futex, with a per-process
// sync.Mutex in front of its slow path so that at most one goroutine per
// process sleeps in FUTEX_WAIT (each one there holds an OS thread).
//
// The word (see the manager layout in heap.go):
//
//	bits 0-6   owner: seat (in the attached-process table) + 1; 0 when unlocked
//	bit  7     waiters: someone may sleep in FUTEX_WAIT
//	bits 8-63  acquisition count: a takeover cannot mistake a new owner in
//	           a reused seat for the dead one it saw, and an optimistic
//	           reader sees that writers ran (2^56 acquisitions before it
//	           wraps: centuries at today's speed)
//
// The owner is identified by its seat, whose liveness is an OFD lock the
// kernel drops when the process dies. A waiter that sees no progress checks
// the owner; if it is dead, the waiter takes the lock over and rolls back
// the owner's operation before doing anything else.
type segLock struct {
	word    *uint64
	me      uint64 // seat + 1
	private bool   // copy-on-write: the word is private, the mutex is the lock
	mu      sync.Mutex
	// stop, when it reads non-zero, makes acquisitions give up: the
	// segment is closing or known corrupt.
	stop *atomic.Uint32
	// takeover takes the lock, whose word holds v, from its owner in seat
	// owner if that owner is dead, and rolls back its operation. It reports
	// whether it took the lock.
	takeover func(v uint64, owner int) bool
}

const (
	lockOwnerMask = 0x7f
	lockWaiters   = 0x80
	lockSeqOne    = 0x100
	// lockPoll is how long a waiter sleeps before it checks whether the
	// owner is still alive.
	lockPoll = 20 * time.Millisecond
)

func (l *segLock) next(v uint64) uint64 { return (v&^0xff + lockSeqOne) | l.me }

// futexWord is the futex: the low 32 bits of the word (little-endian).
func (l *segLock) futexWord() *uint32 { return (*uint32)(unsafe.Pointer(l.word)) }

// lock takes the segment lock. It reports false, not holding the lock,
// when stop was set before it could.
func (l *segLock) lock() bool {
	if l.tryLock() {
		return true
	}
	if l.private {
		l.mu.Lock()
		return true
	}
	return l.lockSlow(true)
}

// lockAnyway is lock without giving up once stop is set: the lanes'
// allocations and frees, which go on while Close waits for them.
func (l *segLock) lockAnyway() {
	if l.tryLock() {
		return
	}
	if l.private {
		l.mu.Lock()
		return
	}
	l.lockSlow(false)
}

// tryLock takes the shared lock if it is free and nobody waits for it.
func (l *segLock) tryLock() bool {
	v := atomic.LoadUint64(l.word)
	return !l.private && v&(lockOwnerMask|lockWaiters) == 0 && atomic.CompareAndSwapUint64(l.word, v, l.next(v))
}

// lockSlow waits for the lock; with honourStop it gives up (false) once
// stop is set.
func (l *segLock) lockSlow(honourStop bool) bool {
	l.mu.Lock() // one sleeper per process
	defer l.mu.Unlock()
	return l.lockMuHeld(honourStop)
}

// lockMuHeld is lockSlow with l.mu held.
func (l *segLock) lockMuHeld(honourStop bool) bool {
	contended := false
	for spin := 0; ; spin++ {
		if honourStop && l.stop.Load()&stUnusable != 0 {
			return false
		}
		v := atomic.LoadUint64(l.word)
		if v&lockOwnerMask == 0 {
			nv := l.next(v)
			if contended {
				nv |= lockWaiters // others may sleep too: our unlock must wake one
			}
			if atomic.CompareAndSwapUint64(l.word, v, nv) {
				return true
			}
			continue
		}
		if spin < 50 {
			runtime.Gosched()
			continue
		}
		if v&lockWaiters == 0 {
			if !atomic.CompareAndSwapUint64(l.word, v, v|lockWaiters) {
				continue
			}
			v |= lockWaiters
		}
		contended = true
		if futexWait(l.futexWord(), uint32(v), lockPoll) {
			continue // woken, or the word changed
		}
		// Timed out: is the owner alive? (The word's low half may have
		// come round to the same value; takeover compares the whole word.)
		if l.takeover(v, int(v&lockOwnerMask)-1) {
			return true
		}
	}
}

// lockForClose takes the lock for Close, which set stop first: it waits
// for the holder, whatever stop says; every acquisition after it gives up.
// It takes l.mu first and keeps it until unlockForClose, so that no
// goroutine of this process is between lockSlow's look at stop and its
// compare-and-swap of the word meanwhile (one asleep in FUTEX_WAIT is
// woken: it sees stop and leaves). For a private lock it takes the mutex.
func (l *segLock) lockForClose() {
	if l.private {
		l.mu.Lock()
		return
	}
	for i := 0; !l.mu.TryLock(); i++ {
		if atomic.LoadUint64(l.word)&lockWaiters != 0 {
			futexWake(l.futexWord(), math.MaxInt32)
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if !l.tryLock() {
		l.lockMuHeld(false)
	}
}

// releaseForClose releases the lock that lockForClose took, through w (the
// lock word as a mapping shows it), while the mapping that goroutines of
// this process use still shows the segment: Close does this before it
// retires the mapping, and until then none of them may take the lock
// again (one that looked at the state before Close set it may be about
// to). l.mu, still held, keeps them out of lockSlow; unless last, the
// waiters bit is left set, so that tryLock fails too (the next process
// to take the lock clears it, in its lockSlow). When last (no other
// process is attached, so nobody else can take the lock or wait for
// it), the word is left clear, and a goroutine of this process that
// takes it before the retire and releases it after leaves it naming
// this open: Close's check of the segment then clears it (quietAtClose).
func (l *segLock) releaseForClose(w *uint64, last bool) {
	for {
		v := atomic.LoadUint64(w)
		if v&lockOwnerMask != l.me {
			return
		}
		nv := v &^ (lockOwnerMask | lockWaiters)
		if !last {
			nv |= lockWaiters
		}
		if atomic.CompareAndSwapUint64(w, v, nv) {
			if v&lockWaiters != 0 {
				futexWake((*uint32)(unsafe.Pointer(w)), 1)
			}
			return
		}
	}
}

// unlockForClose ends Close's hold of l.mu (lockForClose), once the
// mapping is retired: goroutines of this process that take the lock now
// take zeros, in private memory.
func (l *segLock) unlockForClose() {
	if !l.private {
		l.mu.Unlock()
	}
}

// unlock releases the segment lock and wakes a sleeper if there is one.
func (l *segLock) unlock() {
	if l.private {
		l.mu.Unlock()
		return
	}
	if v := atomic.LoadUint64(l.word); v&(lockOwnerMask|lockWaiters) == l.me && atomic.CompareAndSwapUint64(l.word, v, v&^lockOwnerMask) {
		return // nobody to wake
	}
	unlockWord(l.word, l.me)
}

// unlockWord releases the lock word at w held by owner me (in whatever
// mapping w lies) and wakes a sleeper if there is one. A word that names
// another owner is left alone.
func unlockWord(w *uint64, me uint64) {
	for {
		v := atomic.LoadUint64(w)
		if v&lockOwnerMask != me {
			return
		}
		if atomic.CompareAndSwapUint64(w, v, v&^(lockOwnerMask|lockWaiters)) {
			if v&lockWaiters != 0 {
				futexWake((*uint32)(unsafe.Pointer(w)), 1)
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
// process-private), and then the reader must take the lock or wait.
func (l *segLock) readBegin() (uint64, bool) {
	if l.private {
		return 0, false
	}
	v := atomic.LoadUint64(l.word)
	return v, v&lockOwnerMask == 0
}

// readValid reports whether no writer took the lock since readBegin
// returned v: every acquisition changes the count in bits 8-63.
func (l *segLock) readValid(v uint64) bool {
	return atomic.LoadUint64(l.word)&^lockWaiters == v&^lockWaiters
}
