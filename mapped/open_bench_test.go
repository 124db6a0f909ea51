package mapped

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
)

// openBenchNames is how many named uint64s the segment of
// BenchmarkOpenClose holds (bench/cmd/mapbench's open_existing holds as
// many).
const openBenchNames = 100_000

// openBenchSeg builds, once, a closed segment on backing kind ("shm" or
// "file") holding openBenchNames uint64s named obj_<i> with value i.
func openBenchSeg(b *testing.B, kind string) backing.Backing {
	b.Helper()
	var bk backing.Backing
	switch kind {
	case "shm":
		name := "mapstore-openbench-" + strconv.Itoa(os.Getpid())
		_ = shm.Remove(name)
		b.Cleanup(func() { _ = shm.Remove(name) })
		bk = shm.Named(name)
	default:
		bk = file.Path(filepath.Join(b.TempDir(), "open.seg"))
	}
	s, err := Open(bk, CreateOnly, WithSize(64<<20))
	if err != nil {
		b.Fatal(err)
	}
	layout := []byte("\x01\x06uint64u8")
	for i := range openBenchNames {
		init := func(o []byte) { *(*uint64)(unsafe.Pointer(&o[0])) = uint64(i) }
		if _, err := s.CreateNamed("obj_"+strconv.Itoa(i), false, NameSpec{Count: 1, ElemSize: 8, Align: 8, Layout: layout}, init); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return bk
}

// BenchmarkOpenClose opens an existing, cleanly closed segment holding
// 100,000 named uint64s, finds one by name, and closes it, per backing and
// mode. It reports the open and find ("open+find-ns/op") and the Close
// ("close-ns/op") separately.
func BenchmarkOpenClose(b *testing.B) {
	for _, kind := range []string{"shm", "file"} {
		b.Run(kind, func(b *testing.B) {
			bk := openBenchSeg(b, kind)
			for _, mode := range []Mode{OpenOnly, OpenReadOnly} {
				name := "rw"
				if mode == OpenReadOnly {
					name = "ro"
				}
				b.Run(name, func(b *testing.B) {
					var open, cls time.Duration
					layout := []byte("\x01\x06uint64u8")
					i := 0
					for b.Loop() {
						want := uint64(i * 7919 % openBenchNames)
						i++
						t0 := time.Now()
						s, err := Open(bk, mode)
						if err != nil {
							b.Fatal(err)
						}
						p, _, exact, err := s.LookupNamedAs("obj_"+strconv.FormatUint(want, 10), false, layout)
						if err != nil || !exact || *(*uint64)(p) != want {
							b.Fatalf("find obj_%d: %v %v", want, err, exact)
						}
						t1 := time.Now()
						if err := s.Close(); err != nil {
							b.Fatal(err)
						}
						open += t1.Sub(t0)
						cls += time.Since(t1)
					}
					b.ReportMetric(float64(open.Nanoseconds())/float64(b.N), "open+find-ns/op")
					b.ReportMetric(float64(cls.Nanoseconds())/float64(b.N), "close-ns/op")
				})
			}
		})
	}
}
