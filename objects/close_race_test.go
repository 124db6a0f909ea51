package objects

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Calls that Close overtakes end with ErrClosed (an error, or the panic
// of a method that returns none) or the documented misuse panic of a
// value no open segment holds; never ErrCorrupt. Once Close has begun, a
// call reads zeros where the segment was (or finds its size 0), which
// looks like a damaged structure; the report says what happened instead.
func TestCallsOvertakenByCloseSayClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "race.seg")
	w, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(4<<20))
	require.NoError(t, err)
	l, err := Construct(w, "l", List[int64]{})
	require.NoError(t, err)
	m, err := Construct(w, "m", Map[int64, int64]{})
	require.NoError(t, err)
	h, err := Construct(w, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	for i := range int64(1000) {
		_, err := l.PushBack(i)
		require.NoError(t, err)
		require.NoError(t, m.Set(i, i))
		require.NoError(t, h.Set(i, i))
	}
	require.NoError(t, w.Close())

	closedErr := func(v any) bool {
		err, ok := v.(error)
		return ok && errors.Is(err, mapped.ErrClosed)
	}
	for _, mode := range []mapped.Mode{mapped.OpenOnly, mapped.OpenCopyOnWrite} {
		seen := map[string]int{}
		var mu sync.Mutex
		note := func(s string) { mu.Lock(); seen[s]++; mu.Unlock() }
		for range 60 {
			s, err := mapped.Open(file.Path(path), mode)
			require.NoError(t, err)
			l, err := Find[List[int64]](s, "l")
			require.NoError(t, err)
			m, err := Find[Map[int64, int64]](s, "m")
			require.NoError(t, err)
			h, err := Find[HashMap[int64, int64]](s, "h")
			require.NoError(t, err)
			var wg sync.WaitGroup
			start := make(chan struct{})
			loop := func(name string, f func() error) {
				wg.Go(func() {
					defer func() {
						if r := recover(); r != nil && !closedErr(r) && !strings.Contains(fmt.Sprint(r), "not inside any open segment") {
							note(name + " panicked: " + fmt.Sprint(r))
						}
					}()
					<-start
					for {
						if err := f(); err != nil {
							if !errors.Is(err, mapped.ErrClosed) {
								note(name + ": " + err.Error())
							}
							return
						}
					}
				})
			}
			loop("List.All", func() error {
				for range l.All() {
				}
				return nil
			})
			loop("Map.Get", func() error { m.Get(500); return nil })
			loop("Map.Set", func() error { return m.Set(500, 1) })
			loop("HashMap.Get", func() error { h.Get(500); return nil })
			loop("HashMap.Set", func() error { return h.Set(500, 1) })
			close(start)
			time.Sleep(300 * time.Microsecond)
			require.NoError(t, s.Close())
			wg.Wait()
		}
		for s, n := range seen {
			t.Errorf("%v: %dx %s", mode, n, s)
		}
	}
}
