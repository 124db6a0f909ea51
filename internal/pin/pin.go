// Package pin keeps a goroutine on its processor (the runtime's P) for a
// few instructions, so that state kept per P is used by one goroutine at
// a time without a locked instruction: the allocator's per-process block
// caches (mapped, cache.go) are per P.
//
// It reaches the runtime's procPin and procUnpin through linkname. The
// runtime keeps both for outside packages ("Do not remove or change the
// type signature", go.dev/issue/67401); sync.Pool is built on the same
// pair. Between Pin and Unpin the goroutine is not preempted, and a
// stop-the-world waits until every pinned goroutine has unpinned: code in
// between must be short, must not block, sleep or take a lock another
// goroutine may hold, and must not make a system call that can block.
package pin

import _ "unsafe" // linkname

// Pin keeps the calling goroutine on its P until Unpin, and returns the
// P's id: at least 0 and below GOMAXPROCS as it was when Pin was called.
//
//go:linkname Pin runtime.procPin
func Pin() int

// Unpin ends what Pin began.
//
//go:linkname Unpin runtime.procUnpin
func Unpin()
