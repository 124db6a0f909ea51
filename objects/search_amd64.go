package objects

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveAVX512 says this machine has the instructions searchWord and
// walkAVX512 use (AVX-512 F, DQ and BW, BMI2, POPCNT).
var haveAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW &&
	cpu.X86.HasBMI2 && cpu.X86.HasPOPCNT

// countBelowAVX512 is the number of the n keys at ws below k (ordered as
// int64s if signed), reading chunks groups of 8 words but no word past
// the n keys. chunks >= 1 and n <= 8*chunks.
//
//go:noescape
func countBelowAVX512(ws unsafe.Pointer, n int, k uint64, signed bool, chunks int) int

// walkAVX512 is walkWord's walk for the geometries w.asm admits, from the
// node at nd down to the leaf where k is or would be: res 1 found (at
// leaf, index i), 0 not found (i is where it would go), 2 anything
// walkWord must look at itself (a node not below limit, a count over the
// capacity, a walk too deep): the caller walks again in Go. With path,
// it records each node visited as walkWord does.
//
//go:noescape
func walkAVX512(base unsafe.Pointer, limit, nd, k uint64, w *walkGeo, path *[maxMapDepth]pathEnt) (leaf uint64, i, depth, res int)
