//go:build !amd64

package objects

import "unsafe"

// prefetchw and prefetch are hints (see prefetch_amd64.go); elsewhere
// they do nothing.
func prefetchw(p unsafe.Pointer) {}

func prefetch(p unsafe.Pointer) {}
