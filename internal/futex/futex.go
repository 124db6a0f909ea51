// Package futex waits on and wakes 32-bit words in memory shared by
// processes (futex(2) without FUTEX_PRIVATE_FLAG), for the locks and
// queues that objects keeps in a segment.
package futex

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futex(2) operations, without FUTEX_PRIVATE_FLAG: the word is shared
// between processes.
const (
	opWait = 0
	opWake = 1
)

// Wait sleeps while *addr == val, at most d (d <= 0: not at all). It
// reports false when it timed out; true when it was woken, the word
// differed, or a signal interrupted it (the caller looks again either
// way). A goroutine in Wait holds its OS thread.
func Wait(addr *uint32, val uint32, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	ts := unix.NsecToTimespec(int64(d))
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
	return errno != unix.ETIMEDOUT
}

// Wake wakes up to n sleepers in Wait on addr, in any process.
func Wake(addr *uint32, n int) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWake, uintptr(n), 0, 0, 0)
}

// WakeAll wakes every sleeper in Wait on addr.
func WakeAll(addr *uint32) { Wake(addr, 1<<31-1) }

// membarrier(2) commands (linux/membarrier.h).
const (
	mbGlobalExpedited         = 1 << 1
	mbRegisterGlobalExpedited = 1 << 2
)

// RegisterFence registers this process with the kernel for Fence
// (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED): from then on, a Fence in
// any process makes each of this process's running threads execute a
// full memory barrier. It is an error where membarrier(2) is missing or
// refused (an old kernel, a seccomp filter).
func RegisterFence() error {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, mbRegisterGlobalExpedited, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Fence makes every running thread of every process registered with
// RegisterFence execute a full memory barrier before it returns
// (MEMBARRIER_CMD_GLOBAL_EXPEDITED, an inter-processor interrupt; about
// 0.6 µs here): a store such a thread made before the barrier is visible
// to the caller afterwards, even one still in its CPU's store buffer.
// Threads not running have passed a barrier already (a context switch is
// one).
func Fence() error {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, mbGlobalExpedited, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
