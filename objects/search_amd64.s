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
// (keys below k, keys equal to k) without waiting for its header (so the
// compares and the header's miss overlap); then keep the masks' bits of
// the header's count (over the capacity: give up) and count them. An
// inner node's child is the count of keys at or below k; a leaf's place
// is the count of keys below k, and k is there if the key at the place
// equals it. Keys are compared as unsigned once both are XORed with the
// flip (1<<63 for int64 keys).
//
// Registers: AX base, BX limit, CX the node's offset, R8 w, R9 path,
// R10 depth, R11 the node's address, R12 its header, R13 its count,
// SI and DI the keys below k and equal to k (bit j: key j), DX scratch.
// Z0 is k and Z2 the flip, broadcast; K1-K4 the chunks' below masks,
// K5-K7 and K0 their equal masks.
TEXT ·walkAVX512(SB), NOSPLIT, $0-80
	MOVQ base+0(FP), AX
	MOVQ limit+8(FP), BX
	MOVQ nd+16(FP), CX
	MOVQ k+24(FP), DX
	MOVQ w+32(FP), R8
	MOVQ path+40(FP), R9
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
	VPCMPUQ $1, Z0, Z1, K1
	VPCMPUQ $1, Z0, Z3, K2
	VPCMPUQ $1, Z0, Z4, K3
	VPCMPUQ $1, Z0, Z5, K4
	VPCMPEQQ Z0, Z1, K5
	VPCMPEQQ Z0, Z3, K6
	VPCMPEQQ Z0, Z4, K7
	VPCMPEQQ Z0, Z5, K0
	KUNPCKBW K1, K2, K1
	KUNPCKBW K3, K4, K3
	KUNPCKWD K1, K3, K1
	KUNPCKBW K5, K6, K5
	KUNPCKBW K7, K0, K7
	KUNPCKWD K5, K7, K5
	KMOVD K1, SI
	KMOVD K5, DI
	MOVWQZX R12, R13
	BTQ $63, R12
	JCS leaf

	// An inner node: the child to take is the number of keys at or
	// below k.
	CMPQ R13, walkGeo_innerCap(R8)
	JHI unsure
	ORQ DI, SI
	BZHIQ R13, SI, SI
	POPCNTQ SI, SI
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
	// A leaf: k's place is the number of keys below k; it is there if
	// the key at that place equals k.
	CMPQ R13, walkGeo_leafCap(R8)
	JHI unsure
	BZHIQ R13, SI, SI
	POPCNTQ SI, SI
	BZHIQ R13, DI, DI
	TESTQ R9, R9
	JEQ found
	IMUL3Q $pathEnt__size, R10, DX
	ADDQ R9, DX
	MOVQ CX, pathEnt_nd(DX)
	MOVQ R13, pathEnt_n(DX)
	MOVQ SI, pathEnt_idx(DX)

found:
	INCQ R10
	XORQ DX, DX
	BTQ SI, DI
	SETCS DX
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
