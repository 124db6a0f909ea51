package mapped

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/envelope"
)

// FuzzOpen opens arbitrary bytes as a segment in every mode that does not
// create. It must never panic or fault, and every error must be typed.
// With fix set, the fuzzer's bytes get valid magic and checksums in both
// header copies, so that it explores the fields behind them.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed")
	s, err := Open(file.Path(seed), CreateOnly, WithSize(MinSize))
	if err != nil {
		f.Fatal(err)
	}
	s.Close()
	valid, _ := os.ReadFile(seed)
	f.Add(valid, false)
	f.Add(valid[:envelope.PageSize], true)
	f.Add(valid[:100], false)
	f.Add([]byte{}, false)
	table := crc32.MakeTable(crc32.Castagnoli)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if len(data) > 1<<20 || len(data) == 0 { // empty: TestBadFiles (it waits for a creator)
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
		for _, mode := range []Mode{OpenReadOnly, OpenCopyOnWrite, OpenOnly} {
			s, err := Open(file.Path(p), mode, func(o *options) {})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrNotFound) {
					t.Fatalf("%v: untyped error: %v", mode, err)
				}
				continue
			}
			_, _ = s.Info()
			_ = s.Flush()
			if err := s.Close(); err != nil {
				t.Fatalf("%v: close: %v", mode, err)
			}
		}
	})
}
