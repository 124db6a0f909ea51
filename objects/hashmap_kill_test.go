package objects

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// SIGKILL during HashMap calls: a child runs a deterministic sequence of
// calls (Set of long String values, which frees the old value's block;
// GetOrInsert; Delete; now and then Clear; rebuilds as the table grows
// and removed slots pile up) on two maps, one of each table format (the
// word format's "hm", with keys 0 and wordTomb among its keys, and the
// 'G' format's "hg"), storing the index of the call it is in before it
// starts; the parent kills it at random, reopens the segment, and
// requires the maps to hold the state after that many calls or one more,
// a sane segment, and, at the end, every byte back after a destroy.

// hkKey is a key of one of the two maps: m 0 is "hm", 1 "hg".
type hkKey struct {
	m int
	k int64
}

type hkOp struct {
	call string
	key  hkKey
}

// hkOpAt is call i of the sequence of seed.
func hkOpAt(seed uint64, i int64) hkOp {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	k := hkKey{r.IntN(2), int64(r.IntN(400))}
	if k == (hkKey{0, 399}) {
		k.k = tombKey // the word format keeps it in the table's head, as key 0
	}
	switch x := r.IntN(100); {
	case x < 55:
		return hkOp{"set", k}
	case x < 65:
		return hkOp{"ins", k}
	case x < 99:
		return hkOp{"del", k}
	}
	return hkOp{"clear", hkKey{m: k.m}}
}

func hkText(i int64) string {
	return fmt.Sprintf("value of call %d, long enough to own a block of its own", i)
}

// hkApply applies calls [from, to) to model m.
func hkApply(m map[hkKey]string, seed uint64, from, to int64) {
	for i := from; i < to; i++ {
		switch o := hkOpAt(seed, i); o.call {
		case "set":
			m[o.key] = hkText(i)
		case "ins":
			if _, ok := m[o.key]; !ok {
				m[o.key] = ""
			}
		case "del":
			delete(m, o.key)
		case "clear":
			for k := range m {
				if k.m == o.key.m {
					delete(m, k)
				}
			}
		}
	}
}

func hkClone(m map[hkKey]string) map[hkKey]string {
	c := make(map[hkKey]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// hkMaps are the two maps of a kill test.
type hkMaps struct {
	hm *HashMap[int64, String]
	hg *HashMap[int32, String]
}

func hkFind(seg *mapped.Segment) (hkMaps, error) {
	hm, err := Find[HashMap[int64, String]](seg, "hm")
	if err != nil {
		return hkMaps{}, err
	}
	hg, err := Find[HashMap[int32, String]](seg, "hg")
	return hkMaps{hm, hg}, err
}

func hkDo(ms hkMaps, seed uint64, i int64) error {
	o := hkOpAt(seed, i)
	if o.key.m == 0 {
		return hkDoOn(ms.hm, o, o.key.k, i)
	}
	return hkDoOn(ms.hg, o, int32(o.key.k), i)
}

func hkDoOn[K comparable](h *HashMap[K, String], o hkOp, k K, i int64) error {
	switch o.call {
	case "set":
		var v String
		if err := h.Set(k, v); err != nil { // a zero value first, then the text: two calls
			return err
		}
		p, _ := h.Get(k)
		return p.Set(hkText(i))
	case "ins":
		_, _, err := h.GetOrInsert(k)
		return err
	case "del":
		_, err := h.Delete(k)
		return err
	default:
		return h.Clear()
	}
}

// hashKillChild is a hash map kill child's start: the segment (spec
// args[0]), the word of file args[1] where it stores the index of each
// call before it starts, and the first index (args[2]); false (said on
// stderr) when one of them cannot be had.
func hashKillChild(args []string) (*mapped.Segment, *int64, int64, bool) {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return nil, nil, 0, false
	}
	f, err := os.OpenFile(args[1], os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return nil, nil, 0, false
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return nil, nil, 0, false
	}
	from, _ := strconv.ParseInt(args[2], 10, 64)
	return seg, (*int64)(unsafe.Pointer(&mem[0])), from, true
}

// childKillHashMap runs calls from index args[2] on, storing each index
// in the word of file args[1] before it starts, until killed.
func childKillHashMap(args []string) int {
	seg, word, from, ok := hashKillChild(args)
	if !ok {
		return 2
	}
	seed, _ := strconv.ParseUint(args[3], 10, 64)
	ms, err := hkFind(seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	for i := from; ; i++ {
		atomic.StoreInt64(word, i)
		if err := hkDo(ms, seed, i); err != nil {
			fmt.Fprintf(os.Stderr, "call %d: %v\n", i, err)
			return 1
		}
	}
}

// hkState reads the maps into a Go map (values as strings).
func hkState(t *testing.T, seg *mapped.Segment) map[hkKey]string {
	ms, err := hkFind(seg)
	require.NoError(t, err)
	got := map[hkKey]string{}
	for k, v := range ms.hm.All() {
		got[hkKey{0, k}] = v.String()
	}
	for k, v := range ms.hg.All() {
		got[hkKey{1, int64(k)}] = v.String()
	}
	require.Equal(t, len(got), ms.hm.Len()+ms.hg.Len())
	return got
}

func hkEqual(a, b map[hkKey]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSIGKILLDuringHashMapCalls(t *testing.T) {
	kills := 200
	if testing.Short() {
		kills = 20
	}
	if v, err := strconv.Atoi(os.Getenv("MAPSTORE_HASHMAP_KILLS")); err == nil {
		kills = v
	}
	name := fmt.Sprintf("mapstore-hkill-%d", os.Getpid())
	t.Cleanup(func() { _ = shm.Remove(name) })
	for _, spec := range []string{"shm:" + name, "file:" + filepath.Join(t.TempDir(), "hkill.seg")} {
		t.Run(strings.SplitN(spec, ":", 2)[0], func(t *testing.T) { killHashMap(t, spec, kills) })
	}
}

func killHashMap(t *testing.T, spec string, kills int) {
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(8<<20))
	require.NoError(t, err)
	free0 := seg.FreeMemory()
	_, err = Construct(seg, "hm", HashMap[int64, String]{})
	require.NoError(t, err)
	_, err = Construct(seg, "hg", HashMap[int32, String]{})
	require.NoError(t, err)
	require.NoError(t, seg.Close())
	wordFile := filepath.Join(t.TempDir(), "word")
	require.NoError(t, os.WriteFile(wordFile, make([]byte, 8), 0o600))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 99))

	next, rolled, finished := int64(0), 0, 0
	model := map[hkKey]string{} // after calls [0, next)
	for kill := range kills {
		c := proctest.Start(t, "killhash", spec, wordFile, strconv.FormatInt(next, 10), strconv.FormatUint(seed, 10))
		c.Expect("ready")
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		c.Kill()
		data, err := os.ReadFile(wordFile)
		require.NoError(t, err)
		in := *(*int64)(unsafe.Pointer(&data[0])) // the call it was in (or about to start)

		seg, err := kOpenSpec(spec, mapped.OpenOnly)
		require.NoError(t, err)
		for _, a := range seg.RecoveryReport().Actions {
			switch {
			case strings.Contains(a, "rolled back the operation of lane"):
				rolled++
			case strings.Contains(a, "finished the committed operation of lane"):
				finished++
			}
		}
		require.NoError(t, seg.CheckSanity(), "kill %d", kill)
		got := hkState(t, seg)
		hkApply(model, seed, next, in) // before call in
		after := hkClone(model)
		hkApply(after, seed, in, in+1)
		mid := hkClone(model) // a set is two steps: a zero value, then its text
		if o := hkOpAt(seed, in); o.call == "set" {
			mid[o.key] = ""
		}
		switch {
		case hkEqual(got, after):
			model, next = after, in+1
		case hkEqual(got, model):
			next = in
		case hkEqual(got, mid):
			// Between the two steps of a set: finish it here.
			ms, err := hkFind(seg)
			require.NoError(t, err)
			require.NoError(t, hkDo(ms, seed, in))
			model, next = after, in+1
		default:
			t.Fatalf("kill %d in call %d (%v): the map holds neither the state before it nor after it", kill, in, hkOpAt(seed, in))
		}
		require.NoError(t, seg.Close())
	}
	t.Logf("%d kills, %d calls; lanes recovered: %d rolled back, %d finished", kills, next, rolled, finished)
	if !testing.Short() && kills >= 200 { // -short's 20 kills do not always land in both
		assert.Positive(t, rolled, "some kills landed inside a lane before its commit")
		assert.Positive(t, finished, "some kills landed inside a lane after its commit")
	}

	seg, err = kOpenSpec(spec, mapped.OpenOnly)
	require.NoError(t, err)
	defer seg.Close()
	require.NoError(t, Destroy[HashMap[int64, String]](seg, "hm"))
	require.NoError(t, Destroy[HashMap[int32, String]](seg, "hg"))
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

// SIGKILL during HashMap insertions alone: a child sets keys 0, 1, ...
// into an empty map (storing each index before its call starts); the
// parent kills it at random and requires the map to hold exactly the keys
// before the call it was in, or those and that one, then clears it for
// the next child (a map that only grew would spend ever longer in its
// rebuilds, where the kills would land). An insertion (the word format:
// one-word keys) sets its slot's key and the count after saving them in
// its lane: a kill inside that lane is
// rolled back to the saved words. Such a rollback is told from a
// rebuild's (the table a rebuild publishes, before the insertion that
// needed it, has room: a rolled-back rebuild leaves the old table, which
// had none) and must be seen.

func childKillHashInserts(args []string) int {
	seg, word, from, ok := hashKillChild(args)
	if !ok {
		return 2
	}
	h, err := Find[HashMap[int64, int64]](seg, "hi")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	for i := from; ; i++ {
		atomic.StoreInt64(word, i)
		if err := h.Set(i*0x9e3779b9, -i); err != nil {
			fmt.Fprintf(os.Stderr, "call %d: %v\n", i, err)
			return 1
		}
	}
}

func TestSIGKILLDuringHashMapInserts(t *testing.T) {
	kills := 100 // short too: about 1.5 s, and fewer would miss the rollback now and then
	name := fmt.Sprintf("mapstore-hkins-%d", os.Getpid())
	t.Cleanup(func() { _ = shm.Remove(name) })
	spec := "shm:" + name
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(64<<20))
	require.NoError(t, err)
	free0 := seg.FreeMemory()
	_, err = Construct(seg, "hi", HashMap[int64, int64]{})
	require.NoError(t, err)
	require.NoError(t, seg.Close())
	wordFile := filepath.Join(t.TempDir(), "word")
	require.NoError(t, os.WriteFile(wordFile, make([]byte, 8), 0o600))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	keys, insertRolled, rolled := int64(0), 0, 0
	for kill := range kills {
		require.NoError(t, os.WriteFile(wordFile, make([]byte, 8), 0o600)) // the child may die before its first store
		c := proctest.Start(t, "killhashins", spec, wordFile, "0")
		c.Expect("ready")
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		c.Kill()
		data, err := os.ReadFile(wordFile)
		require.NoError(t, err)
		in := *(*int64)(unsafe.Pointer(&data[0]))

		seg, err := kOpenSpec(spec, mapped.OpenOnly)
		require.NoError(t, err)
		rolledBack := false
		for _, a := range seg.RecoveryReport().Actions {
			rolledBack = rolledBack || strings.Contains(a, "rolled back the operation of lane")
		}
		require.NoError(t, seg.CheckSanity(), "kill %d", kill)
		h, err := Find[HashMap[int64, int64]](seg, "hi")
		require.NoError(t, err)
		_, has := h.Get(in * 0x9e3779b9)
		want := in
		if has {
			want = in + 1
		}
		require.Equal(t, int(want), h.Len(), "kill %d in call %d", kill, in)
		for i := range want {
			v, ok := h.Get(i * 0x9e3779b9)
			require.True(t, ok, "kill %d in call %d: key %d", kill, in, i)
			require.Equal(t, -i, *v)
		}
		if rolledBack {
			rolled++
			o := hmOp(t, h)
			if !has && h.n+*o.removed() < wordMaxFull(h.groups) {
				insertRolled++
			}
		}
		keys += want
		require.NoError(t, h.Clear())
		require.NoError(t, seg.Close())
	}
	t.Logf("%d kills, %d keys; %d lanes rolled back, %d of them insertions'", kills, keys, rolled, insertRolled)
	assert.Positive(t, insertRolled, "some kills landed in an insertion's lane, rolled back to its saved words")

	seg, err = kOpenSpec(spec, mapped.OpenOnly)
	require.NoError(t, err)
	defer seg.Close()
	require.NoError(t, Destroy[HashMap[int64, int64]](seg, "hi"))
	assert.Equal(t, free0, seg.FreeMemory())
}
