package journal

import "sync/atomic"

// StoreOrdered stores v at p, after every store before it and before
// every store after it, as seen by a process that looks at the segment
// after this one was killed: it publishes or retires an undo record.
//
// The compiler must not drop it (the gc compiler deletes a plain store
// that a later store to the same word overwrites with no load between,
// and a record is published, the change made, then the record cleared)
// nor move it. A sync/atomic store would do both, but on amd64 it is an
// XCHG, a full fence that costs about 5 ns: 18 ns on an allocate-and-free
// pair of 32 ns (measured). So the store is plain and an atomic load of
// the same word follows it: the load reads the store, so the store is not
// dead, and atomics are never moved across other memory operations. The
// load is a MOV, and the hardware keeps stores in program order (TSO);
// a killed process's stores reach the page cache in that order.
func StoreOrdered(p *uint64, v uint64) {
	*p = v
	atomic.LoadUint64(p)
}
