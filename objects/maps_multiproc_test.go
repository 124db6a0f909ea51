package objects

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// Maps across processes: the parent builds a Map[string, record] and a
// HashMap[int64, String]; a child maps the segment at another address
// (a spacer segment first), checks every entry, changes them (deletes,
// replacements, new keys, enough to split and rebuild), and the parent
// sees exactly the child's version (its HashMap Gets, which went to the
// old table by this process's record of it, go to the child's new one).

func xpmFill(seg *mapped.Segment) error {
	m, err := Construct(seg, "xpm-map", Map[string, record]{})
	if err != nil {
		return err
	}
	h, err := Construct(seg, "xpm-hash", HashMap[int64, String]{})
	if err != nil {
		return err
	}
	for i := range 300 {
		r, _, err := m.GetOrInsert(fmt.Sprintf("person %04d with a long key", i))
		if err != nil {
			return err
		}
		r.ID = int64(i)
		if err := r.Name.Set(fmt.Sprintf("name %d, long enough for a block", i)); err != nil {
			return err
		}
		v, _, err := h.GetOrInsert(int64(i))
		if err != nil {
			return err
		}
		if err := v.Set(fmt.Sprintf("value %d", i)); err != nil {
			return err
		}
	}
	return nil
}

// xpmDescribe lists both maps' contents in order.
func xpmDescribe(seg *mapped.Segment) (string, error) {
	m, err := Find[Map[string, record]](seg, "xpm-map")
	if err != nil {
		return "", err
	}
	h, err := Find[HashMap[int64, String]](seg, "xpm-hash")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for k, r := range m.All() {
		fmt.Fprintf(&b, "%s=%d/%s;", k, r.ID, r.Name.String())
	}
	// Key 0 last: it is kept in the table's head, and a Get of it checks
	// the table afresh (hashlook.go), which would hide a stale record.
	for j := range int64(1400) {
		i := (j + 1) % 1400
		if v, ok := h.Get(i); ok {
			fmt.Fprintf(&b, "%d=%s;", i, v.String())
		}
	}
	fmt.Fprintf(&b, "len %d %d", m.Len(), h.Len())
	return b.String(), nil
}

// xpmMutate deletes every third entry, replaces every fifth, adds 400
// (and 600 more to the HashMap).
func xpmMutate(seg *mapped.Segment) error {
	m, err := Find[Map[string, record]](seg, "xpm-map")
	if err != nil {
		return err
	}
	h, err := Find[HashMap[int64, String]](seg, "xpm-hash")
	if err != nil {
		return err
	}
	for i := range 300 {
		k := fmt.Sprintf("person %04d with a long key", i)
		switch {
		case i%3 == 0:
			if _, err := m.Delete(k); err != nil {
				return err
			}
			if _, err := h.Delete(int64(i)); err != nil {
				return err
			}
		case i%5 == 0:
			if err := m.Set(k, record{ID: -int64(i)}); err != nil {
				return err
			}
			v, _ := h.Get(int64(i))
			if err := v.Set("replaced by the child, long enough for a block"); err != nil {
				return err
			}
		}
	}
	for i := 300; i < 700; i++ {
		if err := m.Set(fmt.Sprintf("child %04d", i), record{ID: int64(i)}); err != nil {
			return err
		}
		if err := h.Set(int64(i), String{}); err != nil {
			return err
		}
	}
	// Past 3 in 4 of the table's slots: the child rebuilds the table that
	// the parent's Gets went to (and recorded) before.
	for i := 700; i < 1300; i++ {
		if err := h.Set(int64(i), String{}); err != nil {
			return err
		}
	}
	return nil
}

func childMaps(args []string) int {
	spacer, err := mapped.Open(file.Path(args[1]), mapped.CreateOnly, mapped.WithSize(64<<10), mapped.WithMaxSize(1<<30))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer spacer.Close()
	seg, err := mapped.Open(file.Path(args[0]), mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer seg.Close()
	fmt.Printf("base %d\n", uintptr(seg.Base()))
	d, err := xpmDescribe(seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("before %q\n", d)
	if err := xpmMutate(seg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	d, err = xpmDescribe(seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("after %q\n", d)
	return 0
}

func TestMapsAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xpm.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	defer seg.Close()
	require.NoError(t, xpmFill(seg))
	before, err := xpmDescribe(seg)
	require.NoError(t, err)

	c := proctest.Start(t, "xpmaps", path, filepath.Join(dir, "spacer.seg"))
	base, err := strconv.ParseUint(c.Expect("base "), 10, 64)
	require.NoError(t, err)
	assert.NotEqual(t, uint64(uintptr(seg.Base())), base, "the child maps the segment elsewhere")
	seen, err := strconv.Unquote(c.Expect("before "))
	require.NoError(t, err)
	assert.Equal(t, before, seen, "the child reads what the parent wrote")
	after, err := strconv.Unquote(c.Expect("after "))
	require.NoError(t, err)
	require.Equal(t, 0, c.Wait(), c.Stderr())

	mine, err := xpmDescribe(seg)
	require.NoError(t, err)
	assert.Equal(t, after, mine, "the parent sees the child's changes")
	assert.Contains(t, mine, "child 0699=699/")
	assert.Contains(t, mine, ";1299=;", "the HashMap's last key, in the child's rebuilt table")
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Map[string, record]](seg, "xpm-map"))
	require.NoError(t, Destroy[HashMap[int64, String]](seg, "xpm-hash"))
	assert.True(t, seg.AllMemoryDeallocated())
}
