package objects

import "unsafe"

// prefetchw reads the cache line at p ahead, for writing (PREFETCHW):
// the line comes to this processor's cache, taken from any other, while
// the caller goes on. A hint; it never faults.
//
//go:noescape
func prefetchw(p unsafe.Pointer)

// prefetch reads the cache line at p ahead, for reading (PREFETCHT0).
//
//go:noescape
func prefetch(p unsafe.Pointer)
