package mapped

import "math/bits"

// Size classes: the cell sizes of small blocks, and how each run is cut.
// A run is 1-8 pages: a bitmap of live cells (bits past the last cell
// are set), then the cells at the class's alignment.
const maxSmall = 2048

type sizeClass struct {
	size   uint64 // cell bytes
	pages  uint64 // pages per run
	start  uint64 // offset of cell 0 in the run (after the bitmap)
	ncells uint64
	words  uint64 // bitmap words
	align  uint64 // alignment of every cell
	inv    uint64 // 2^32/size + 1: x*inv>>32 == x/size for x < 2^16
}

var (
	classSize = []uint64{16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256,
		320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048}
	classes = buildClasses()
	classOf = buildClassOf() // by (size+15)/16
	// geoms[c][k] is how a run of class c of 1<<k pages is cut. A run has
	// its class's pages (classes[c]), or fewer when the page heap has no
	// room for that many (a small fixed-size segment): runs shrink to fit.
	geoms = buildGeoms()
)

// cut is how a run of pages pages is cut into cells of size bytes at
// align: the bitmap first, then the cells.
func cut(size, pages, align uint64) sizeClass {
	run := pages * pageSize
	n := run / size
	var start uint64
	for {
		words := (n + 63) / 64
		start = (words*8 + align - 1) / align * align
		m := (run - start) / size
		if m >= n {
			break
		}
		n = m
	}
	return sizeClass{size: size, pages: pages, start: start, ncells: n, words: (n + 63) / 64, align: align, inv: 1<<32/size + 1}
}

func buildGeoms() (g [][4]sizeClass) {
	for _, cl := range classes {
		var row [4]sizeClass
		for k := range row {
			if p := uint64(1) << k; p <= cl.pages {
				row[k] = cut(cl.size, p, cl.align)
			}
		}
		g = append(g, row)
	}
	return g
}

// geomOf is the geometry of the run whose first descriptor word is w0
// (kind kRun), or nil if its class or page count is not one a run has.
func geomOf(w0 uint64) *sizeClass {
	c, p := dClass(w0), dPages(w0)
	if c >= uint64(len(classes)) || p == 0 || p&(p-1) != 0 || p > classes[c].pages {
		return nil
	}
	return &geoms[c][bits.TrailingZeros64(p)]
}

// buildClasses cuts each class's runs: of 1, 2, 4 or 8 pages, whichever
// wastes least (by more than 2%).
func buildClasses() []sizeClass {
	var classes []sizeClass
	for _, size := range classSize {
		align := min(uint64(1)<<bits.TrailingZeros64(size), pageSize)
		var best sizeClass
		bestWaste := 2.0
		for _, pages := range []uint64{1, 2, 4, 8} {
			g := cut(size, pages, align)
			waste := float64(pages*pageSize-g.ncells*size) / float64(pages*pageSize)
			if g.ncells >= 2 && waste < bestWaste-0.02 {
				best, bestWaste = g, waste
			}
		}
		classes = append(classes, best)
	}
	return classes
}

func buildClassOf() (t [maxSmall/16 + 1]uint8) {
	c := 0
	for i := range t {
		for classes[c].size < uint64(i)*16 {
			c++
		}
		t[i] = uint8(c)
	}
	return t
}

// cellOf is the cell of run offset rel in class cl, and whether rel is a
// cell's first byte.
func (cl *sizeClass) cellOf(rel uint64) (uint64, bool) {
	if rel < cl.start {
		return 0, false
	}
	x := rel - cl.start
	s := x * cl.inv >> 32
	return s, s < cl.ncells && s*cl.size == x
}
