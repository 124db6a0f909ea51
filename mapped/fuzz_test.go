package mapped

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/envelope"
)

// FuzzOpen opens arbitrary bytes as a segment in every mode that does not
// create, then runs a fixed script of calls on what opened (walk the
// names, look each up, read its block, check sanity, allocate and free
// small and large blocks, create and remove a name, grow). Nothing may
// panic or fault (faults become panics here, with debug.SetPanicOnFault),
// and every error must be typed. With fix set, the fuzzer's bytes get
// valid magic and checksums in both header copies, so that it explores
// the fields behind them. The seeds include a segment with names, blocks
// and free spans.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed")
	s, err := Open(file.Path(seed), CreateOnly, WithSize(MinSize))
	if err != nil {
		f.Fatal(err)
	}
	for i := range 12 {
		b, err := s.Allocate(16 << (i % 9))
		if err != nil {
			f.Fatal(err)
		}
		if i%3 == 0 {
			_ = s.Deallocate(b)
		}
		if _, err := s.CreateNamed(fmt.Sprintf("n%d", i), i%2 == 0, NameSpec{Count: int64(i), ElemSize: 8}, nil); err != nil {
			f.Fatal(err)
		}
	}
	s.Close()
	valid, _ := os.ReadFile(seed)
	f.Add(valid, false)
	f.Add(valid[:envelope.PageSize], true)
	f.Add(valid[:100], false)
	f.Add([]byte{}, false)
	table := crc32.MakeTable(crc32.Castagnoli)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if len(data) > 1<<20 || len(data) == 0 { // empty: TestBadFiles
			return
		}
		data = append([]byte(nil), data...)
		if fix && len(data) >= envelope.PageSize {
			for _, off := range []int{envelope.HeaderOffA, envelope.HeaderOffB} {
				h := data[off : off+envelope.HeaderLen]
				copy(h, envelope.Magic)
				binary.LittleEndian.PutUint32(h[508:], crc32.Checksum(h[:508], table))
			}
		}
		p := filepath.Join(t.TempDir(), "fuzz.seg")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		for _, mode := range []Mode{OpenReadOnly, OpenCopyOnWrite, OpenOnly} {
			s, err := Open(file.Path(p), mode)
			if err != nil {
				requireTyped(t, mode.String()+": open", err)
				continue
			}
			fuzzScript(t, s)
			if err := s.Close(); err != nil {
				requireTyped(t, mode.String()+": close", err)
			}
		}
	})
}

// fuzzScript is what FuzzOpen does with a segment that opened.
func fuzzScript(t *testing.T, s *Segment) {
	_, _ = s.Info()
	for n := range s.NamedObjects() {
		_, err := s.LookupNamed(n.Name, n.Unique)
		requireTyped(t, "lookup", err)
		_, err = s.Block(n.Handle)
		requireTyped(t, "block", err)
	}
	requireTyped(t, "check", s.CheckSanity())
	_ = s.FreeMemory()
	for _, n := range []int{24, 3000, 9000} {
		b, err := s.Allocate(n)
		requireTyped(t, "allocate", err)
		if err == nil {
			requireTyped(t, "deallocate", s.Deallocate(b))
		}
	}
	_, err := s.CreateNamed("fuzz", false, NameSpec{Count: 2, ElemSize: 8}, nil)
	requireTyped(t, "create", err)
	requireTyped(t, "remove", s.RemoveNamed("fuzz", false, nil))
	requireTyped(t, "grow", s.Grow(4096))
	requireTyped(t, "flush", s.Flush())
}

// requireTyped fails unless err is nil or one of the segment's errors.
func requireTyped(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, e := range []error{ErrCorrupt, ErrVersion, ErrNotFound, ErrNoSpace, ErrInvalidHandle, ErrReadOnly, ErrExists, ErrBusy} {
		if errors.Is(err, e) {
			return
		}
	}
	t.Fatalf("%s: untyped error: %v", what, err)
}
