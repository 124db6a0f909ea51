package objects

// walkGeo is what walkAVX512 needs of a Map's node geometry (its fields
// are read by offset from objects/search_amd64.s, through go_asm.h).
type walkGeo struct {
	leafCap, innerCap       int
	leafChunks, innerChunks int    // 8-key groups of a leaf's keys, of an inner node's
	childOff                uint64 // an inner node's children
	maxSize                 uint64 // the larger node size
	pfFrom, pfTo            uint64 // the node's lines past its first 4 chunks of keys, to read ahead
	flip                    uint64 // 1<<63 for signed keys: ordered as unsigned once flipped
	asm                     bool   // walkAVX512 may walk these nodes
}

// walkChunks is the 8-key groups walkAVX512 compares in every node: it
// reads them whether the node holds that many keys or not, so both node
// kinds must hold nodeHdr+walkChunks*64 bytes.
const walkChunks = 4

func newWalkGeo(g *mapGeo) walkGeo {
	w := walkGeo{
		leafCap: g.leafCap, innerCap: g.innerCap,
		leafChunks: (g.leafCap + 7) / 8, innerChunks: (g.innerCap + 7) / 8,
		childOff: uint64(g.childOff), maxSize: uint64(g.maxSize),
		pfFrom: (nodeHdr + walkChunks*64 + 63) &^ 63, pfTo: uint64(g.minSize),
	}
	if g.signed {
		w.flip = 1 << 63
	}
	w.asm = haveAVX512 && g.word && max(g.leafCap, g.innerCap) <= walkChunks*8 &&
		uint64(g.minSize) >= nodeHdr+walkChunks*64
	return w
}
