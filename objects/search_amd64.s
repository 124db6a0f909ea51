#include "textflag.h"

// func countBelowAVX512(ws unsafe.Pointer, n int, k uint64, signed bool, chunks int) int
//
// Each chunk of 8 keys is compared with k at once (key < k, for the keys
// of the chunk among the first n: a masked load reads no other word),
// and the count of the chunk's mask added. R8 is the mask of the n keys,
// shifted a chunk at a time. Signed keys are compared as unsigned once
// they and k are XORed with 1<<63 (Z2), as walkAVX512 does.
TEXT ·countBelowAVX512(SB), NOSPLIT, $0-48
	MOVQ ws+0(FP), AX
	MOVQ n+8(FP), CX
	MOVQ k+16(FP), DX
	MOVBQZX signed+24(FP), BX
	MOVQ chunks+32(FP), SI
	XORQ R9, R9
	TESTQ SI, SI
	JLE none
	MOVQ $-1, R8
	BZHIQ CX, R8, R8
	SHLQ $63, BX
	XORQ BX, DX
	VPBROADCASTQ DX, Z0
	VPBROADCASTQ BX, Z2

chunk:
	KMOVB R8, K1
	VPXORQ (AX), Z2, K1, Z1
	VPCMPUQ $1, Z0, Z1, K1, K2
	KMOVB K2, R10
	POPCNTL R10, R10
	ADDQ R10, R9
	SHRQ $8, R8
	ADDQ $64, AX
	DECQ SI
	JNZ chunk
	VZEROUPPER

none:
	MOVQ R9, ret+40(FP)
	RET

#include "go_asm.h"

// func walkAVX512(base unsafe.Pointer, limit, nd, k uint64, w *walkGeo, path *[maxMapDepth]pathEnt) (leaf uint64, i, depth, res int)
//
// A node at a time: check that it lies below limit, aligned; read ahead
// its lines past the first 4 chunks of keys; compare all 4 chunks with k
// (keys at or below k) without waiting for its header (so the compares
// and the header's miss overlap); then keep the mask's bits of the
// header's count (over the capacity: give up) and count them. An inner
// node's child is that count. In a leaf, k is there if the last key at
// or below it equals it, and k's place is then the count less one, else
// the count (keys are sorted and distinct). Only the at-or-below compare
// is made: an equal compare too cost 9 instructions a node, and a lookup
// at 1e6 keys is faster by about a tenth without them (the next lookup's
// misses start sooner). Keys are compared as unsigned once both are
// XORed with the flip (1<<63 for int64 keys).
//
// Registers: AX base, BX limit, CX the node's offset, DI k, R8 w, R9
// path, R10 depth, R11 the node's address, R12 its header, R13 its count,
// SI the keys at or below k (bit j: key j), then their count; DX scratch.
// Z0 is k and Z2 the flip, broadcast; K1-K4 the chunks' masks.
TEXT ·walkAVX512(SB), NOSPLIT, $0-80
	MOVQ base+0(FP), AX
	MOVQ limit+8(FP), BX
	MOVQ nd+16(FP), CX
	MOVQ k+24(FP), DI
	MOVQ w+32(FP), R8
	MOVQ path+40(FP), R9
	MOVQ DI, DX
	XORQ walkGeo_flip(R8), DX
	VPBROADCASTQ DX, Z0
	VPBROADCASTQ walkGeo_flip(R8), Z2
	XORQ R10, R10

loop:
	CMPQ R10, $const_maxMapDepth
	JAE unsure
	TESTQ $7, CX
	JNZ unsure
	MOVQ CX, DX
	ADDQ walkGeo_maxSize(R8), DX
	JCS unsure
	CMPQ DX, BX
	JHI unsure
	LEAQ (AX)(CX*1), R11

	// Read ahead the node's lines past the keys compared below.
	MOVQ walkGeo_pfFrom(R8), DX
ahead:
	CMPQ DX, walkGeo_pfTo(R8)
	JCC keys
	PREFETCHT0 (R11)(DX*1)
	ADDQ $64, DX
	JMP ahead

keys:
	MOVQ (R11), R12
	VPXORQ 16(R11), Z2, Z1
	VPXORQ 80(R11), Z2, Z3
	VPXORQ 144(R11), Z2, Z4
	VPXORQ 208(R11), Z2, Z5
	VPCMPUQ $2, Z0, Z1, K1
	VPCMPUQ $2, Z0, Z3, K2
	VPCMPUQ $2, Z0, Z4, K3
	VPCMPUQ $2, Z0, Z5, K4
	KUNPCKBW K1, K2, K1
	KUNPCKBW K3, K4, K3
	KUNPCKWD K1, K3, K1
	KMOVD K1, SI
	MOVWQZX R12, R13
	BZHIQ R13, SI, SI
	POPCNTQ SI, SI
	BTQ $63, R12
	JCS leaf

	// An inner node: the child to take is the number of keys at or
	// below k.
	CMPQ R13, walkGeo_innerCap(R8)
	JHI unsure
	TESTQ R9, R9
	JEQ child
	IMUL3Q $pathEnt__size, R10, DX
	ADDQ R9, DX
	MOVQ CX, pathEnt_nd(DX)
	MOVQ R13, pathEnt_n(DX)
	MOVQ SI, pathEnt_idx(DX)

child:
	MOVQ walkGeo_childOff(R8), DX
	LEAQ (DX)(SI*8), DX
	MOVQ (R11)(DX*1), CX
	INCQ R10
	JMP loop

leaf:
	// A leaf: SI keys are at or below k; k is there if the last of them
	// equals it, and its place is then one less.
	CMPQ R13, walkGeo_leafCap(R8)
	JHI unsure
	XORQ DX, DX
	TESTQ SI, SI
	JEQ place
	CMPQ DI, 8(R11)(SI*8)
	SETEQ DX
	SUBQ DX, SI

place:
	TESTQ R9, R9
	JEQ found
	IMUL3Q $pathEnt__size, R10, R12
	ADDQ R9, R12
	MOVQ CX, pathEnt_nd(R12)
	MOVQ R13, pathEnt_n(R12)
	MOVQ SI, pathEnt_idx(R12)

found:
	INCQ R10
	MOVQ CX, leaf+48(FP)
	MOVQ SI, i+56(FP)
	MOVQ R10, depth+64(FP)
	MOVQ DX, res+72(FP)
	VZEROUPPER
	RET

unsure:
	MOVQ CX, leaf+48(FP)
	MOVQ $0, i+56(FP)
	MOVQ R10, depth+64(FP)
	MOVQ $2, res+72(FP)
	VZEROUPPER
	RET
