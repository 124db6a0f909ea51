//go:build !amd64

package objects

import "unsafe"

// haveAVX512 is false here; a variable, as on amd64, so that tests can
// set it.
var haveAVX512 = false

func countBelowAVX512(ws unsafe.Pointer, n int, k uint64, signed bool, chunks int) int {
	panic("unreachable")
}

func walkAVX512(base unsafe.Pointer, limit, nd, k uint64, w *walkGeo, path *[maxMapDepth]pathEnt) (leaf uint64, i, depth, res int) {
	panic("unreachable")
}
