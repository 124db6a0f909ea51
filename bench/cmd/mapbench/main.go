// Command mapbench runs mapstore's side-by-side benchmark workloads (see
// bench/README.md) and prints one line per case and backing:
//
//	case=<name> backing=<shm|file|heap> n=<ops> ns_per_op=<float>
//
// A case that measures more than ns_per_op adds key=<float> fields to
// its line (alloc_free_64_2procs: see allocprocs.go). heap is the floor: Go's own allocator and map. bench/compare.sh runs it
// alternately with the Boost.Interprocess harness.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

const segSize = 256 << 20

type bench struct {
	name string
	run  func(b env) (n int, d time.Duration, err error)
}

// noHeap are the cases without a heap row: they are about segments.
var noHeap = map[string]bool{"open_existing": true, "close_existing": true, "queue_pingpong_64": true, "queue_throughput_64": true, allocProcsCase: true}

// env is one backing: seg is nil for heap; b is the backing seg was
// created in. A case adds fields to its result line with field.
type env struct {
	seg    *mapped.Segment
	b      backing.Backing
	fields *[]string
}

// field adds key=v to the case's result line, after ns_per_op.
func (e env) field(key string, v float64) {
	*e.fields = append(*e.fields, key+"="+strconv.FormatFloat(v, 'f', 4, 64))
}

var cases = []bench{
	{"alloc_free_64", allocFree64},
	{allocProcsCase, allocFree64Procs},
	{"alloc_many_then_free_64", allocManyThenFree64},
	{"alloc_mixed", allocMixed},
	{"construct_named", constructNamed},
	{"find_named", findNamed},
	{"vector_push_back", vectorPushBack},
	{"string_set", stringSet},
	{"list_push_pop", listPushPop},
	{"destroy_named", destroyNamed},
	{"map_insert", mapInsert},
	{"map_find", mapFind},
	{"hashmap_insert", hashMapInsert},
	{"hashmap_find", hashMapFind},
	{"open_existing", openExisting},
	{"close_existing", closeExisting},
	{"mutex_lock_unlock", mutexLockUnlock},
	{"queue_pingpong_64", queuePingpong64},
	{"queue_throughput_64", queueThroughput64},
}

func main() {
	caseList := flag.String("cases", "", "comma list of cases (default all)")
	backings := flag.String("backings", "shm,file,heap", "comma list of backings")
	dir := flag.String("dir", os.TempDir(), "directory for file segments")
	child := flag.String("child", "", "run as the second process of this case (internal)")
	childSeg := flag.String("seg", "", "with -child: the segment (shm:NAME or a path)")
	childN := flag.Int("n", 0, "with -child: operations")
	flag.Parse()
	if *child != "" {
		if err := ipcChild(*child, *childSeg, *childN); err != nil {
			fmt.Fprintf(os.Stderr, "mapbench: child %s: %v\n", *child, err)
			os.Exit(1)
		}
		return
	}
	want := map[string]bool{}
	for _, c := range strings.Split(*caseList, ",") {
		if c != "" {
			want[c] = true
		}
	}
	for c := range want {
		if !slices.ContainsFunc(cases, func(b bench) bool { return b.name == c }) {
			fmt.Fprintf(os.Stderr, "mapbench: unknown case %q\n", c)
			os.Exit(2)
		}
	}
	for _, c := range cases {
		if len(want) > 0 && !want[c.name] {
			continue
		}
		for _, bk := range strings.Split(*backings, ",") {
			if err := runOne(c, bk, *dir); err != nil {
				fmt.Fprintf(os.Stderr, "mapbench: %s on %s: %v\n", c.name, bk, err)
				os.Exit(1)
			}
		}
	}
}

func runOne(c bench, bk, dir string) error {
	var b backing.Backing
	switch bk {
	case "heap":
		if noHeap[c.name] {
			return nil
		}
	case "shm":
		name := fmt.Sprintf("mapbench-%d", os.Getpid())
		_ = shm.Remove(name)
		defer shm.Remove(name)
		b = shm.Named(name)
	case "file":
		p := filepath.Join(dir, fmt.Sprintf("mapbench-%d.seg", os.Getpid()))
		_ = os.Remove(p)
		defer os.Remove(p)
		b = file.Path(p)
	default:
		return fmt.Errorf("unknown backing %q", bk)
	}
	e := env{fields: new([]string)}
	if b != nil {
		s, err := mapped.Open(b, mapped.CreateOnly, mapped.WithSize(segSize))
		if err != nil {
			return err
		}
		defer s.Close()
		e.seg, e.b = s, b
	}
	runtime.GC()
	n, d, err := c.run(e)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("case=%s backing=%s n=%d ns_per_op=%s", c.name, bk, n, strconv.FormatFloat(float64(d.Nanoseconds())/float64(n), 'f', 2, 64))
	fmt.Println(strings.Join(append([]string{line}, *e.fields...), " "))
	return nil
}

// sink keeps heap allocations alive so the compiler cannot drop them.
var sink [][]byte

// allocFreeN is alloc_free_64's count of pairs, and each process's in
// alloc_free_64_2procs.
const allocFreeN = 2_000_000

func allocFree64(e env) (int, time.Duration, error) {
	const n = allocFreeN
	start := time.Now()
	if e.seg == nil {
		for i := 0; i < n; i++ {
			sink = append(sink[:0], make([]byte, 64))
		}
		return n, time.Since(start), nil
	}
	if err := allocFreeLoop(e.seg, n); err != nil {
		return 0, 0, err
	}
	return n, time.Since(start), nil
}

// allocFreeLoop allocates a 64-byte block in s and frees it, n times.
func allocFreeLoop(s *mapped.Segment, n int) error {
	for i := 0; i < n; i++ {
		b, err := s.Allocate(64)
		if err != nil {
			return err
		}
		if err := s.Deallocate(b); err != nil {
			return err
		}
	}
	return nil
}

func allocManyThenFree64(e env) (int, time.Duration, error) {
	const n = 1_000_000
	order := rand.New(rand.NewPCG(42, 0)).Perm(n)
	blocks := make([][]byte, n)
	start := time.Now()
	if e.seg == nil {
		for i := range blocks {
			blocks[i] = make([]byte, 64)
		}
		for _, i := range order {
			blocks[i] = nil
		}
		return n, time.Since(start), nil
	}
	// Keep one pointer per block, as the C++ side keeps a void*: a
	// []byte header is three words, and a table of them three times the
	// cache footprint.
	ptrs := make([]*byte, n)
	start = time.Now()
	for i := range ptrs {
		b, err := e.seg.Allocate(64)
		if err != nil {
			return 0, 0, err
		}
		ptrs[i] = &b[0]
	}
	for _, i := range order {
		if err := e.seg.Deallocate(unsafe.Slice(ptrs[i], 64)); err != nil {
			return 0, 0, err
		}
	}
	return n, time.Since(start), nil
}

func allocMixed(e env) (int, time.Duration, error) {
	const live, steps = 10_000, 1_000_000
	rng := rand.New(rand.NewPCG(42, 1))
	sizes := make([]int, live+steps)
	for i := range sizes {
		sizes[i] = 16 + rng.IntN(4096-16+1)
	}
	idx := make([]int, steps)
	for i := range idx {
		idx[i] = rng.IntN(live)
	}
	blocks := make([][]byte, live)
	alloc := func(n int) ([]byte, error) {
		if e.seg == nil {
			return make([]byte, n), nil
		}
		return e.seg.Allocate(n)
	}
	for i := range blocks {
		b, err := alloc(sizes[i])
		if err != nil {
			return 0, 0, err
		}
		blocks[i] = b
	}
	start := time.Now()
	for s := 0; s < steps; s++ {
		i := idx[s]
		if e.seg != nil {
			if err := e.seg.Deallocate(blocks[i]); err != nil {
				return 0, 0, err
			}
		}
		b, err := alloc(sizes[live+s])
		if err != nil {
			return 0, 0, err
		}
		blocks[i] = b
	}
	return steps, time.Since(start), nil
}

const numNamed = 100_000

// nameTable holds the names inline, 16 bytes each (a length byte, then
// the characters), the way the C++ harness's std::vector<std::string>
// keeps them (small-string form, inside the vector): one memory access
// per name, where a []string would cost two (the header, then the bytes).
type nameTable []byte

const nameStride = 16

func names() nameTable {
	t := make(nameTable, numNamed*nameStride)
	for i := 0; i < numNamed; i++ {
		e := t[i*nameStride : (i+1)*nameStride]
		e[0] = byte(copy(e[1:], "obj_"+strconv.Itoa(i)))
	}
	return t
}

func (t nameTable) len() int { return len(t) / nameStride }

// at is name i, as a string that shares the table's memory.
func (t nameTable) at(i int) string {
	e := t[i*nameStride : (i+1)*nameStride]
	return unsafe.String(&e[1], int(e[0]))
}

func construct(e env, ns nameTable, heap map[string]*uint64) error {
	for i := range ns.len() {
		if e.seg == nil {
			v := uint64(i)
			heap[strings.Clone(ns.at(i))] = &v
			continue
		}
		if _, err := objects.Construct(e.seg, ns.at(i), uint64(i)); err != nil {
			return err
		}
	}
	return nil
}

func constructNamed(e env) (int, time.Duration, error) {
	ns := names()
	heap := map[string]*uint64{}
	start := time.Now()
	err := construct(e, ns, heap)
	return numNamed, time.Since(start), err
}

func findNamed(e env) (int, time.Duration, error) {
	const n = 1_000_000
	ns := names()
	heap := map[string]*uint64{}
	if err := construct(e, ns, heap); err != nil {
		return 0, 0, err
	}
	rng := rand.New(rand.NewPCG(42, 2))
	idx := make([]uint32, n) // uint32, as the C++ side's indices
	for i := range idx {
		idx[i] = uint32(rng.IntN(numNamed))
	}
	var sum uint64
	start := time.Now()
	for _, i := range idx {
		var v uint64
		name := ns.at(int(i))
		if e.seg == nil {
			p, ok := heap[name]
			if !ok {
				return 0, 0, fmt.Errorf("%s not found", name)
			}
			v = *p
		} else {
			p, err := objects.Find[uint64](e.seg, name)
			if err != nil {
				return 0, 0, err
			}
			v = *p
		}
		if v != uint64(i) {
			return 0, 0, fmt.Errorf("%s holds %d", name, v)
		}
		sum += v
	}
	d := time.Since(start)
	if sum == 0 {
		return 0, 0, fmt.Errorf("checksum zero")
	}
	return n, d, nil
}

func destroyNamed(e env) (int, time.Duration, error) {
	ns := names()
	heap := map[string]*uint64{}
	if err := construct(e, ns, heap); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := range ns.len() {
		name := ns.at(i)
		if e.seg == nil {
			delete(heap, name)
			continue
		}
		if err := objects.Destroy[uint64](e.seg, name); err != nil {
			return 0, 0, err
		}
	}
	return numNamed, time.Since(start), nil
}

// openCloseTimes is open_existing and close_existing (bench/README.md):
// with the segment holding map_insert's map of mapN keys and closed, open
// it, find the map by name, look up a random key and check its value,
// then close it; 100 times. It returns the time of the opens and finds
// and that of the closes.
func openCloseTimes(e env) (n int, open, cls time.Duration, err error) {
	const opens = 100
	keys, _ := mapKeys()
	if _, err := fillMap(e, keys); err != nil {
		return 0, 0, 0, err
	}
	if err := e.seg.Close(); err != nil {
		return 0, 0, 0, err
	}
	rng := rand.New(rand.NewPCG(42, 3))
	idx := make([]uint32, opens)
	for i := range idx {
		idx[i] = uint32(rng.IntN(mapN))
	}
	runtime.GC()
	for _, i := range idx {
		t0 := time.Now()
		s, err := mapped.Open(e.b, mapped.OpenOnly)
		if err != nil {
			return 0, 0, 0, err
		}
		m, err := objects.Find[objects.Map[uint64, float64]](s, mapName)
		if err != nil {
			return 0, 0, 0, err
		}
		v, ok := m.Get(keys[i])
		if !ok || *v != float64(i) {
			return 0, 0, 0, fmt.Errorf("key %d (index %d) not found or wrong value", keys[i], i)
		}
		t1 := time.Now()
		if err := s.Close(); err != nil {
			return 0, 0, 0, err
		}
		open += t1.Sub(t0)
		cls += time.Since(t1)
	}
	return opens, open, cls, nil
}

func openExisting(e env) (int, time.Duration, error) {
	n, open, _, err := openCloseTimes(e)
	return n, open, err
}

func closeExisting(e env) (int, time.Duration, error) {
	n, _, cls, err := openCloseTimes(e)
	return n, cls, err
}
