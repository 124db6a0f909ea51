package objects

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
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

// The Map kill test, built as the container kill test is (its intent log,
// kOp lines and phases): a child runs random mutating Map calls until the
// parent kills it with SIGKILL; after each kill a fresh Open (which
// recovers the child's lane) and the parent's own open must both see
// every map as it was before the interrupted call or after it, every tree
// must verify (mapVerify), and destroying everything must free every
// block. The calls are chosen to make the rare cases common: a map of
// large values (leaves of 4) that grows until its root splits and shrinks
// until it merges; a map of records replaced over existing keys (freeing
// the old record's strings); a map of maps, deleted, replaced and
// destroyed with everything inside. Each logged call names its case,
// predicted from the tree before the call ("big.Set/split-root",
// "big.Delete/merge-root"), so that the recovery reports count kills per
// case.

const (
	kmBig  = "km_big"  // Map[int64, bigVal]
	kmRec  = "km_rec"  // Map[string, kRec]
	kmNest = "km_nest" // Map[int64, Map[string, Vector[int64]]]
)

type kmNestMap = Map[int64, innerMap]

// kmRecKey and kmInnerKey are the string keys of index i: short ones
// inline, long ones in blocks; kmIndex turns either back into i.
func kmRecKey(i int) string {
	s := fmt.Sprintf("r%05d", i)
	if i%3 != 0 {
		s += strings.Repeat(".long", 1+i%4)
	}
	return s
}

func kmInnerKey(i int) string { return "i" + kmRecKey(i)[1:] }

func kmIndex(s string) int {
	i, err := strconv.Atoi(s[1:6])
	if err != nil {
		panic(s)
	}
	return i
}

// kmModel is what the maps hold.
type kmModel struct {
	Big  map[int64]bigVal
	Rec  map[int]kRecM
	Nest map[int64]map[int][]int64 // nil: km_nest does not exist
}

func newKMModel() *kmModel {
	return &kmModel{Big: map[int64]bigVal{}, Rec: map[int]kRecM{}, Nest: map[int64]map[int][]int64{}}
}

func (m *kmModel) clone() *kmModel {
	c := &kmModel{Big: maps.Clone(m.Big), Rec: map[int]kRecM{}}
	for k, r := range m.Rec {
		c.Rec[k] = kRecM{r.ID, r.Name, slices.Clone(r.Tags)}
	}
	if m.Nest != nil {
		c.Nest = map[int64]map[int][]int64{}
		for k, in := range m.Nest {
			c.Nest[k] = map[int][]int64{}
			for j, v := range in {
				c.Nest[k][j] = slices.Clone(v)
			}
		}
	}
	return c
}

func kmBigDump(b *strings.Builder, k int64, v *bigVal) {
	h := fnv.New64a()
	h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&v.B)), unsafe.Sizeof(v.B)))
	fmt.Fprintf(b, "%d=%d/%x ", k, v.A, h.Sum64())
}

func kmRecDump(b *strings.Builder, k string, id int64, name string, tags []string) {
	fmt.Fprintf(b, "%s={%d %q %q} ", k, id, name, tags)
}

// dump is the model as a string, in the maps' key order: equal dumps,
// equal states.
func (m *kmModel) dump() string {
	var b strings.Builder
	b.WriteString("big: ")
	for _, k := range sortedKeys(m.Big, cmp.Compare[int64]) {
		v := m.Big[k]
		kmBigDump(&b, k, &v)
	}
	b.WriteString("\nrec: ")
	recs := map[string]int{}
	for i := range m.Rec {
		recs[kmRecKey(i)] = i
	}
	for _, k := range sortedKeys(recs, strings.Compare) {
		r := m.Rec[recs[k]]
		kmRecDump(&b, k, r.ID, r.Name, r.Tags)
	}
	b.WriteString("\nnest: ")
	if m.Nest == nil {
		b.WriteString("absent")
	}
	for _, k := range sortedKeys(m.Nest, cmp.Compare[int64]) {
		fmt.Fprintf(&b, "%d{", k)
		in := map[string]int{}
		for j := range m.Nest[k] {
			in[kmInnerKey(j)] = j
		}
		for _, s := range sortedKeys(in, strings.Compare) {
			fmt.Fprintf(&b, "%s=%v ", s, m.Nest[k][in[s]])
		}
		b.WriteString("} ")
	}
	return b.String()
}

// apply changes the model as the call o does.
func (m *kmModel) apply(o kOp) {
	s, a, b, c := o.seq, o.a, o.b, o.c
	call, _, _ := strings.Cut(o.call, "/") // the case after the slash
	switch call {
	case "big.Set":
		m.Big[int64(a)] = bigOf(s)
	case "big.GetOrInsert":
		if _, ok := m.Big[int64(a)]; !ok {
			m.Big[int64(a)] = bigVal{}
		}
	case "big.WriteA":
		v := m.Big[int64(a)]
		v.A = s
		m.Big[int64(a)] = v
	case "big.Delete":
		delete(m.Big, int64(a))
	case "big.Clear":
		clear(m.Big)
	case "rec.GetOrInsert":
		if _, ok := m.Rec[a]; !ok {
			m.Rec[a] = kRecM{}
		}
	case "rec.WriteID":
		r := m.Rec[a]
		r.ID = s
		m.Rec[a] = r
	case "rec.Name.Set":
		r := m.Rec[a]
		r.Name = kText(s, b)
		m.Rec[a] = r
	case "rec.Tags.Append":
		r := m.Rec[a]
		r.Tags = append(slices.Clone(r.Tags), "")
		m.Rec[a] = r
	case "rec.Tags.Set":
		r := m.Rec[a]
		r.Tags = slices.Clone(r.Tags)
		r.Tags[b] = kText(s, c)
		m.Rec[a] = r
	case "rec.Set":
		m.Rec[a] = kRecM{ID: s}
	case "rec.Delete":
		delete(m.Rec, a)
	case "rec.Clear":
		clear(m.Rec)
	case "nest.GetOrInsert":
		if _, ok := m.Nest[int64(a)]; !ok {
			m.Nest[int64(a)] = map[int][]int64{}
		}
	case "nest.Put":
		if _, ok := m.Nest[int64(a)][b]; !ok {
			m.Nest[int64(a)][b] = nil
		}
	case "nest.Append":
		m.Nest[int64(a)][b] = append(slices.Clone(m.Nest[int64(a)][b]), kVals(s, c)...)
	case "nest.InnerDelete":
		delete(m.Nest[int64(a)], b)
	case "nest.InnerClear":
		clear(m.Nest[int64(a)])
	case "nest.Set":
		m.Nest[int64(a)] = map[int][]int64{}
	case "nest.Delete":
		delete(m.Nest, int64(a))
	case "nest.Clear":
		clear(m.Nest)
	case "destroy.nest":
		m.Nest = nil
	case "create.nest":
		m.Nest = map[int64]map[int][]int64{}
	default:
		panic(o.call)
	}
}

// kmState dumps what seg holds, verifying every tree on the way.
func kmState(seg *mapped.Segment) (string, error) {
	var b strings.Builder
	big, err := Find[Map[int64, bigVal]](seg, kmBig)
	if err != nil {
		return "", err
	}
	if _, err := mapVerify(big, cmp.Compare[int64]); err != nil {
		return "", fmt.Errorf("%s: %w", kmBig, err)
	}
	b.WriteString("big: ")
	for k, v := range big.All() {
		kmBigDump(&b, k, v)
	}
	rec, err := Find[Map[string, kRec]](seg, kmRec)
	if err != nil {
		return "", err
	}
	if _, err := mapVerify(rec, strings.Compare); err != nil {
		return "", fmt.Errorf("%s: %w", kmRec, err)
	}
	b.WriteString("\nrec: ")
	for k, r := range rec.All() {
		var tags []string
		for _, t := range r.Tags.All() {
			tags = append(tags, t.String())
		}
		kmRecDump(&b, k, r.ID, r.Name.String(), tags)
	}
	b.WriteString("\nnest: ")
	nest, err := Find[kmNestMap](seg, kmNest)
	if errors.Is(err, mapped.ErrNotFound) {
		b.WriteString("absent")
		return b.String(), nil
	}
	if err != nil {
		return "", err
	}
	if _, err := mapVerify(nest, cmp.Compare[int64]); err != nil {
		return "", fmt.Errorf("%s: %w", kmNest, err)
	}
	for k, in := range nest.All() {
		if _, err := mapVerify(in, strings.Compare); err != nil {
			return "", fmt.Errorf("%s[%d]: %w", kmNest, k, err)
		}
		fmt.Fprintf(&b, "%d{", k)
		for s, v := range in.All() {
			fmt.Fprintf(&b, "%s=%v ", s, v.Slice())
		}
		b.WriteString("} ")
	}
	return b.String(), nil
}

// kmDestroyAll destroys the maps, and everything inside them.
func kmDestroyAll(seg *mapped.Segment) error {
	for _, err := range []error{
		Destroy[Map[int64, bigVal]](seg, kmBig),
		Destroy[Map[string, kRec]](seg, kmRec),
		Destroy[kmNestMap](seg, kmNest),
	} {
		if err != nil && !errors.Is(err, mapped.ErrNotFound) {
			return err
		}
	}
	return nil
}

// kmBuild constructs in seg (which holds none of them) what m holds.
func kmBuild(seg *mapped.Segment, m *kmModel) error {
	big, err := Construct(seg, kmBig, Map[int64, bigVal]{})
	if err != nil {
		return err
	}
	for k, v := range m.Big {
		if err := big.Set(k, v); err != nil {
			return err
		}
	}
	rec, err := Construct(seg, kmRec, Map[string, kRec]{})
	if err != nil {
		return err
	}
	for i, rm := range m.Rec {
		r, _, err := rec.GetOrInsert(kmRecKey(i))
		if err != nil {
			return err
		}
		r.ID = rm.ID
		if err := r.Name.Set(rm.Name); err != nil {
			return err
		}
		for j, tag := range rm.Tags {
			if err := r.Tags.Append(String{}); err != nil {
				return err
			}
			if err := r.Tags.At(j).Set(tag); err != nil {
				return err
			}
		}
	}
	if m.Nest == nil {
		return nil
	}
	nest, err := Construct(seg, kmNest, kmNestMap{})
	if err != nil {
		return err
	}
	for k, im := range m.Nest {
		in, _, err := nest.GetOrInsert(k)
		if err != nil {
			return err
		}
		for j, xs := range im {
			v, _, err := in.GetOrInsert(kmInnerKey(j))
			if err != nil {
				return err
			}
			if err := v.Append(xs...); err != nil {
				return err
			}
		}
	}
	return nil
}

// mapPredictSet says what a Set of k does to m: whether k is there, how
// many levels split (depth: the root splits too), and the depth.
func mapPredictSet[K comparable, V any](m *Map[K, V], k K) (found bool, splits, depth int) {
	o, err := m.op("predict")
	if err != nil || m.root == 0 {
		return false, 0, 0
	}
	var path [maxMapDepth]pathEnt
	d, found, err := o.descend(&k, &path)
	if err != nil || found {
		return found, 0, d
	}
	for lvl := d - 1; lvl >= 0; lvl-- {
		capn := o.g.innerCap
		if lvl == d-1 {
			capn = o.g.leafCap
		}
		if path[lvl].n < capn {
			break
		}
		splits++
	}
	return false, splits, d
}

// mapPredictInPlace says whether a Set of k, a new key, goes into its
// leaf in place (Map.insertInPlace) rather than rewriting it.
func mapPredictInPlace[K comparable, V any](m *Map[K, V], k K) bool {
	o, err := m.op("predict")
	if err != nil || m.root == 0 {
		return false
	}
	var path [maxMapDepth]pathEnt
	d, found, err := o.descend(&k, &path)
	return err == nil && !found && o.g.inPlace(path[d-1])
}

// mapPredictDelete says what a Delete of k does to m: whether k is
// there, how many levels merge with a sibling, whether the root gives way
// to its only child, and whether a level evens out with a sibling.
func mapPredictDelete[K comparable, V any](m *Map[K, V], k K) (found bool, merges int, rootGoes, evens bool) {
	o, err := m.op("predict")
	if err != nil || m.root == 0 {
		return false, 0, false, false
	}
	var path [maxMapDepth]pathEnt
	d, found, err := o.descend(&k, &path)
	if err != nil || !found {
		return found, 0, false, false
	}
	lvl, s, leaf := d-1, path[d-1].n-1, true
	for {
		capn := o.g.innerCap
		if leaf {
			capn = o.g.leafCap
		}
		if lvl == 0 {
			return true, merges, !leaf && s == 0, false
		}
		if s >= capn/2 {
			return true, merges, false, false
		}
		p := path[lvl-1]
		si := p.idx - 1
		if p.idx == 0 {
			si = 1
		}
		sn, _, err := o.node(*o.child(p.nd, si))
		if err != nil {
			return true, merges, false, false
		}
		total := sn + s
		if !leaf {
			total++
		}
		if total > capn {
			return true, merges, false, true
		}
		merges++
		lvl, s, leaf = lvl-1, p.n-1, false
	}
}

// kmPicker chooses the child's calls.
type kmPicker struct {
	rng  *rand.Rand
	seg  *mapped.Segment
	big  *Map[int64, bigVal]
	rec  *Map[string, kRec]
	nest *kmNestMap // nil: not there (or not looked up yet)
}

const (
	kmBigKeys  = 1000
	kmRecKeys  = 300
	kmNestKeys = 20
)

// presentBig is a key of big at or after a random one (ok false: empty).
func (p *kmPicker) presentBig() (int64, bool) {
	for k := range p.big.Range(int64(p.rng.IntN(kmBigKeys)), kmBigKeys) {
		return k, true
	}
	k, _, ok := p.big.Min()
	return k, ok
}

func (p *kmPicker) presentRec() (int, *kRec, bool) {
	for k, r := range p.rec.Range(kmRecKey(p.rng.IntN(kmRecKeys)), "s") {
		return kmIndex(k), r, true
	}
	k, r, ok := p.rec.Min()
	if !ok {
		return 0, nil, false
	}
	return kmIndex(k), r, true
}

func (p *kmPicker) pick(seq int64) (kOp, func() error) {
	op := kOp{seq: seq}
	set := func(call string, args ...int) {
		op.call = call
		for i, a := range args {
			*[]*int{&op.a, &op.b, &op.c}[i] = a
		}
	}
	switch r := p.rng.IntN(10); {
	case r < 5:
		return p.pickBig(&op, set)
	case r < 8:
		return p.pickRec(&op, set)
	}
	return p.pickNest(&op, set)
}

// pickBig grows the map until its root splits (choosing among a few new
// keys the one that splits the most levels), then shrinks it until the
// root merges (choosing the key whose delete merges the most).
func (p *kmPicker) pickBig(op *kOp, set func(string, ...int)) (kOp, func() error) {
	big, seq, rng := p.big, op.seq, p.rng
	_, _, depth := mapPredictSet(big, 0)
	grow := depth <= 2 || big.Len() < 30
	if big.Len() > 400 {
		grow = false
	}
	switch r := rng.IntN(200); {
	case r == 0:
		set("big.Clear")
		return *op, big.Clear
	case r < 10:
		k := int64(rng.IntN(kmBigKeys))
		set("big.GetOrInsert", int(k))
		return *op, func() error { _, _, err := big.GetOrInsert(k); return err }
	case r < 25:
		if k, ok := p.presentBig(); ok {
			set("big.WriteA", int(k))
			return *op, func() error {
				v, ok := big.Get(k)
				if !ok {
					return fmt.Errorf("%d vanished", k)
				}
				atomic.StoreInt64(&v.A, seq)
				return nil
			}
		}
	case r < 40:
		if k, ok := p.presentBig(); ok {
			set("big.Set/existing", int(k))
			return *op, func() error { return big.Set(k, bigOf(seq)) }
		}
	}
	if grow || big.Len() == 0 {
		best, bestSplits := int64(-1), -1
		for range 4 {
			k := int64(rng.IntN(kmBigKeys))
			found, splits, d := mapPredictSet(big, k)
			if found {
				continue
			}
			if d > 0 && splits == d {
				splits += 10 // the root
			}
			if splits > bestSplits {
				best, bestSplits = k, splits
			}
		}
		if best >= 0 {
			_, splits, d := mapPredictSet(big, best)
			kind := "big.Set/new"
			switch {
			case mapPredictInPlace(big, best):
				kind = "big.Set/in-place"
			case d > 0 && splits == d:
				kind = "big.Set/split-root"
			case splits > 0:
				kind = "big.Set/split"
			}
			set(kind, int(best))
			return *op, func() error { return big.Set(best, bigOf(seq)) }
		}
	}
	best, bestScore := int64(-1), -1
	for range 4 {
		k, ok := p.presentBig()
		if !ok {
			break
		}
		_, merges, rootGoes, _ := mapPredictDelete(big, k)
		if rootGoes {
			merges += 10
		}
		if merges > bestScore {
			best, bestScore = k, merges
		}
	}
	if best < 0 {
		k := int64(rng.IntN(kmBigKeys))
		set("big.Delete/absent", int(k))
		return *op, func() error { _, err := big.Delete(k); return err }
	}
	_, merges, rootGoes, evens := mapPredictDelete(big, best)
	kind := "big.Delete/plain"
	switch {
	case big.Len() == 1:
		kind = "big.Delete/last"
	case rootGoes:
		kind = "big.Delete/merge-root"
	case merges > 0:
		kind = "big.Delete/merge"
	case evens:
		kind = "big.Delete/even"
	}
	set(kind, int(best))
	return *op, func() error {
		ok, err := big.Delete(best)
		if err == nil && !ok {
			err = fmt.Errorf("%d was not there", best)
		}
		return err
	}
}

// kText lengths: inline, short, or long.
func (p *kmPicker) strLen() int {
	switch p.rng.IntN(3) {
	case 0:
		return p.rng.IntN(8)
	case 1:
		return 8 + p.rng.IntN(24)
	}
	return 32 + p.rng.IntN(100)
}

func (p *kmPicker) pickRec(op *kOp, set func(string, ...int)) (kOp, func() error) {
	rec, seq, rng := p.rec, op.seq, p.rng
	n := rec.Len()
	if n < 10 || (n < 80 && rng.IntN(4) == 0) {
		i := rng.IntN(kmRecKeys)
		if rng.IntN(2) == 0 {
			set("rec.GetOrInsert", i)
			return *op, func() error { _, _, err := rec.GetOrInsert(kmRecKey(i)); return err }
		}
		kind := "rec.Set/new"
		switch {
		case rec.Has(kmRecKey(i)):
			kind = "rec.Set/existing"
		case mapPredictInPlace(rec, kmRecKey(i)):
			kind = "rec.Set/in-place"
		}
		set(kind, i)
		return *op, func() error { return rec.Set(kmRecKey(i), kRec{ID: seq}) }
	}
	i, r, _ := p.presentRec()
	k := kmRecKey(i)
	nt := r.Tags.Len()
	switch x := rng.IntN(20); {
	case x == 0 && rng.IntN(8) == 0:
		set("rec.Clear")
		return *op, rec.Clear
	case x < 3:
		set("rec.WriteID", i)
		return *op, func() error { atomic.StoreInt64(&r.ID, seq); return nil }
	case x < 6:
		l := p.strLen()
		set("rec.Name.Set", i, l)
		return *op, func() error { return r.Name.Set(kText(seq, l)) }
	case x < 8 && nt < 6:
		set("rec.Tags.Append", i)
		return *op, func() error { return r.Tags.Append(String{}) }
	case x < 10 && nt > 0:
		j, l := rng.IntN(nt), p.strLen()
		set("rec.Tags.Set", i, j, l)
		return *op, func() error { return r.Tags.At(j).Set(kText(seq, l)) }
	case x < 14: // over a record that owns strings: frees them
		set("rec.Set/existing", i)
		return *op, func() error { return rec.Set(k, kRec{ID: seq}) }
	}
	found, merges, rootGoes, _ := mapPredictDelete(rec, k)
	kind := "rec.Delete/plain"
	switch {
	case !found:
		kind = "rec.Delete/absent"
	case rootGoes:
		kind = "rec.Delete/merge-root"
	case merges > 0:
		kind = "rec.Delete/merge"
	}
	set(kind, i)
	return *op, func() error { _, err := rec.Delete(k); return err }
}

func (p *kmPicker) pickNest(op *kOp, set func(string, ...int)) (kOp, func() error) {
	seg, seq, rng := p.seg, op.seq, p.rng
	if p.nest == nil {
		nest, err := Find[kmNestMap](seg, kmNest)
		if errors.Is(err, mapped.ErrNotFound) {
			set("create.nest")
			return *op, func() error { _, err := Construct(seg, kmNest, kmNestMap{}); return err }
		}
		if err != nil {
			return *op, func() error { return err }
		}
		p.nest = nest
	}
	nest := p.nest
	if rng.IntN(60) == 0 {
		set("destroy.nest")
		return *op, func() error { p.nest = nil; return Destroy[kmNestMap](seg, kmNest) }
	}
	a := int64(rng.IntN(kmNestKeys))
	in, ok := nest.Get(a)
	switch x := rng.IntN(40); {
	case !ok && nest.Len() < 12:
		set("nest.GetOrInsert", int(a))
		return *op, func() error { _, _, err := nest.GetOrInsert(a); return err }
	case !ok:
		set("nest.Delete/absent", int(a))
		return *op, func() error { _, err := nest.Delete(a); return err }
	case x == 0:
		set("nest.Clear")
		return *op, nest.Clear
	case x < 3:
		set("nest.InnerClear", int(a))
		return *op, in.Clear
	case x < 6: // over a map with everything inside: frees it
		set("nest.Set/existing", int(a))
		return *op, func() error { return nest.Set(a, innerMap{}) }
	case x < 9:
		set("nest.Delete/present", int(a))
		return *op, func() error { _, err := nest.Delete(a); return err }
	}
	b := rng.IntN(200)
	if in.Len() > 0 && rng.IntN(3) != 0 {
		for s := range in.Range(kmInnerKey(b), "j") {
			b = kmIndex(s)
			break
		}
	}
	v, has := in.Get(kmInnerKey(b))
	switch {
	case !has && in.Len() < 40:
		set("nest.Put", int(a), b)
		return *op, func() error { _, _, err := in.GetOrInsert(kmInnerKey(b)); return err }
	case !has || rng.IntN(3) == 0:
		for s := range in.Range(kmInnerKey(b), "j") {
			b = kmIndex(s)
			break
		}
		set("nest.InnerDelete", int(a), b)
		return *op, func() error { _, err := in.Delete(kmInnerKey(b)); return err }
	}
	c := 1 + rng.IntN(8)
	if v.Len() > 30 {
		set("nest.InnerDelete", int(a), b)
		return *op, func() error { _, err := in.Delete(kmInnerKey(b)); return err }
	}
	set("nest.Append", int(a), b, c)
	return *op, func() error { return v.Append(kVals(seq, c)...) }
}

func childKillMaps(args []string) int {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, err := openKLog(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	seq, _ := strconv.ParseInt(args[2], 10, 64)
	seed, _ := strconv.ParseUint(args[3], 10, 64)
	p := &kmPicker{rng: rand.New(rand.NewPCG(seed, 29)), seg: seg}
	if p.big, err = Find[Map[int64, bigVal]](seg, kmBig); err == nil {
		p.rec, err = Find[Map[string, kRec]](seg, kmRec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for ready := seq + 20; ; seq++ {
		if seq == ready {
			fmt.Println("ready")
		}
		atomic.StoreUint64(log.phase(), kPicking)
		op, call := p.pick(seq)
		line := op.String()
		atomic.StoreUint64(log.phase(), kLogging)
		if err := log.add(line); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		atomic.StoreUint64(log.phase(), kCalling)
		if err := call(); err != nil {
			fmt.Fprintf(os.Stderr, "%v: %v\n", op, err)
			return 1
		}
	}
}

// kmAwaitCall maps the child's intent log and spins until its phase says
// it is in a call (or, bounded, gives up), then spins spin times more.
func kmAwaitCall(t *testing.T, path string, spin int) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	mem, err := syscall.Mmap(int(f.Fd()), 0, 8, syscall.PROT_READ, syscall.MAP_SHARED)
	require.NoError(t, err)
	defer func() { _ = syscall.Munmap(mem) }()
	phase := (*uint64)(unsafe.Pointer(&mem[0]))
	for i := 0; i < 1<<26 && atomic.LoadUint64(phase) != kCalling; i++ {
	}
	x := uint64(0)
	for i := range spin {
		x += atomic.LoadUint64(phase) + uint64(i)
	}
	kmSink.Store(x)
}

var kmSink atomic.Uint64

func TestSIGKILLDuringMapCalls(t *testing.T) {
	kills := 220
	if testing.Short() {
		kills = 20
	}
	if v := os.Getenv("MAPSTORE_MAP_KILLS"); v != "" {
		var err error
		kills, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	t.Run("file", func(t *testing.T) {
		killMaps(t, "file:"+filepath.Join(t.TempDir(), "killmap.seg"), kills)
	})
	t.Run("shm", func(t *testing.T) {
		name := fmt.Sprintf("mapstore-killmap-%d", os.Getpid())
		t.Cleanup(func() { _ = shm.Remove(name) })
		killMaps(t, "shm:"+name, kills)
	})
}

func killMaps(t *testing.T, spec string, kills int) {
	start := time.Now()
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(8<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	m := newKMModel()
	require.NoError(t, kmBuild(seg, m))
	logDir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "mapstore-intents-"); err == nil {
		logDir = d
		t.Cleanup(func() { _ = os.RemoveAll(d) })
	}
	logPath := filepath.Join(logDir, "intents.log")
	rng := rand.New(rand.NewPCG(uint64(len(spec)), 31))
	seq := int64(1)
	rolled, finished := map[string]int{}, map[string]int{}
	calls, lastDone := 0, 0
	seen := map[string]int{} // calls made, by case
	var phases [kPhases]int
	for k := range kills {
		c := proctest.Start(t, "killmap", spec, logPath, strconv.FormatInt(seq, 10), strconv.FormatUint(rng.Uint64(), 10))
		c.Expect("ready")
		time.Sleep(time.Duration(1<<rng.IntN(13)+rng.IntN(1<<rng.IntN(13))) * time.Microsecond)
		if k%4 != 0 {
			// Mostly, aim at a call: wait until the child says it is in
			// one, then a little more.
			kmAwaitCall(t, logPath, 1<<rng.IntN(14))
		}
		c.Kill()
		require.Equal(t, -1, c.Cmd.ProcessState.ExitCode(), "the child ran until killed: %s", c.Stderr())

		ops, phase := readKOps(t, logPath)
		phases[phase]++
		calls += len(ops)
		for _, o := range ops {
			seen[o.call]++
		}
		for _, o := range ops[:max(len(ops)-1, 0)] {
			m.apply(o)
		}
		before, after := m, m
		var last kOp
		if len(ops) > 0 {
			last = ops[len(ops)-1]
			require.Equal(t, seq+int64(len(ops))-1, last.seq, "the log holds every call in order")
			seq = last.seq + 1
			after = m.clone()
			after.apply(last)
		}
		bd, ad := before.dump(), after.dump()

		fresh, err := kOpenSpec(spec, mapped.OpenOnly)
		require.NoError(t, err, "kill %d", k)
		for _, a := range fresh.RecoveryReport().Actions {
			switch {
			case strings.Contains(a, "rolled back the operation of lane"):
				rolled[last.call]++
			case strings.Contains(a, "finished the committed operation of lane"):
				finished[last.call]++
			}
		}
		var got string
		for _, s := range []*mapped.Segment{fresh, seg} {
			require.NoError(t, s.CheckSanity(), "kill %d after %v", k, last)
			got, err = kmState(s)
			require.NoError(t, err, "kill %d after %v", k, last)
			if got != bd && got != ad {
				require.Failf(t, "a map holds neither the state before nor the one after the interrupted call",
					"kill %d during %v\nbefore:\n%s\nafter:\n%s\ngot:\n%s", k, last, bd, ad, got)
			}
		}
		if got == ad {
			m = after
			if len(ops) > 0 {
				lastDone++
			}
		} else {
			m = before
		}
		by := []*mapped.Segment{fresh, seg}[k%2]
		require.NoError(t, kmDestroyAll(by), "kill %d", k)
		require.True(t, seg.AllMemoryDeallocated(), "kill %d after %v: every block freed", k, last)
		require.True(t, fresh.AllMemoryDeallocated())
		require.Equal(t, free0, seg.FreeMemory(), "kill %d after %v", k, last)
		require.NoError(t, seg.CheckSanity())
		require.NoError(t, kmBuild(by, m), "kill %d", k)
		require.NoError(t, fresh.Close())
	}
	kinds := slices.Sorted(maps.Keys(seen))
	var lines []string
	nr, nf := 0, 0
	for _, kd := range kinds {
		lines = append(lines, fmt.Sprintf("%-24s %5d calls, killed in its lane: %3d rolled back, %3d finished", kd, seen[kd], rolled[kd], finished[kd]))
		nr += rolled[kd]
		nf += finished[kd]
	}
	var where []string
	for p, n := range phases {
		where = append(where, fmt.Sprintf("%d %s", n, kPhaseNames[p]))
	}
	t.Logf("%s: %d kills (%s) in %v; %d calls, the last one stood after %d kills; %d kills inside a lane (%d rolled back, %d finished):\n%s",
		spec[:strings.IndexByte(spec, ':')], kills, strings.Join(where, ", "), time.Since(start).Round(time.Millisecond), calls, lastDone,
		nr+nf, nr, nf, strings.Join(lines, "\n"))
	if !testing.Short() && kills >= 200 {
		assert.Positive(t, nr, "some kills landed in a lane before its commit")
		assert.Positive(t, nf, "some kills landed in a lane after its commit")
		assert.Positive(t, seen["big.Set/split-root"], "Sets split up to the root")
		assert.Positive(t, seen["big.Delete/merge-root"], "Deletes merged up to the root")
	}
	require.NoError(t, kmDestroyAll(seg))
	require.True(t, seg.AllMemoryDeallocated())
}

// The insert in place (Map.insertInPlace) is rolled back from its lane's
// saves: a child kills itself at each of its steps, for a new key at the
// start, middle and end of a leaf, in a map of int64 keys and one of
// string keys (a long key's block allocated in the lane); after each
// kill the map holds the keys it held before, its tree verifies, and
// destroying it frees every block.

const inPlaceKeys = 40 // keys 0, 2, ... 78 before each insert

func inPlaceBuild(seg *mapped.Segment) error {
	ints, err := Construct(seg, "ip_ints", Map[int64, int64]{})
	if err != nil {
		return err
	}
	strs, err := Construct(seg, "ip_strs", Map[string, int64]{})
	if err != nil {
		return err
	}
	for i := range inPlaceKeys {
		if err := ints.Set(int64(2*i), int64(i)); err != nil {
			return err
		}
		if err := strs.Set(kmRecKey(2*i), int64(i)); err != nil {
			return err
		}
	}
	return nil
}

// inPlaceDump is both maps' keys and values, and their headers.
func inPlaceDump(seg *mapped.Segment) (string, error) {
	ints, err := Find[Map[int64, int64]](seg, "ip_ints")
	if err != nil {
		return "", err
	}
	strs, err := Find[Map[string, int64]](seg, "ip_strs")
	if err != nil {
		return "", err
	}
	if _, err := mapVerify(ints, cmp.Compare[int64]); err != nil {
		return "", err
	}
	if _, err := mapVerify(strs, strings.Compare); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %d:", ints.n, strs.n)
	for k, v := range ints.All() {
		fmt.Fprintf(&b, " %d=%d", k, *v)
	}
	b.WriteString(" |")
	for k, v := range strs.All() {
		fmt.Fprintf(&b, " %s=%d", k, *v)
	}
	return b.String(), nil
}

// killAtStep is a step hook (inPlaceHook, splitHook) that kills this
// process with SIGKILL at step.
func killAtStep(step string) func(string) {
	return func(s string) {
		if s == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// childInPlace: args are the segment, the map ("ints" or "strs"), the
// key's index and the step to die at.
func childInPlace(args []string) int {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	i, _ := strconv.Atoi(args[2])
	step := args[3]
	inPlaceHook = killAtStep(step)
	var call func() error
	var inPlace bool
	switch args[1] {
	case "ints":
		m, err := Find[Map[int64, int64]](seg, "ip_ints")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		inPlace = mapPredictInPlace(m, int64(i))
		call = func() error { return m.Set(int64(i), -1) }
	default:
		m, err := Find[Map[string, int64]](seg, "ip_strs")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		inPlace = mapPredictInPlace(m, kmRecKey(i))
		call = func() error { return m.Set(kmRecKey(i), -1) }
	}
	if !inPlace {
		fmt.Fprintf(os.Stderr, "key %d of %s does not go in place\n", i, args[1])
		return 3
	}
	if err := call(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0 // the step was not reached
}

func TestSIGKILLDuringInsertInPlace(t *testing.T) {
	spec := "file:" + filepath.Join(t.TempDir(), "inplace.seg")
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	rolled := 0
	// Keys 1 (the first leaf's start), 3, the middle of a leaf, the end.
	for _, i := range []int{1, 3, 11, 2*inPlaceKeys + 1} {
		for _, which := range []string{"ints", "strs"} {
			for _, step := range []string{"saved", "written", "counted"} {
				require.NoError(t, inPlaceBuild(seg))
				before, err := inPlaceDump(seg)
				require.NoError(t, err)
				c := proctest.Start(t, "inplace", spec, which, strconv.Itoa(i), step)
				code := c.Wait()
				require.Equal(t, -1, code, "%s key %d step %s: the child was killed: %s", which, i, step, c.Stderr())
				fresh, err := kOpenSpec(spec, mapped.OpenOnly)
				require.NoError(t, err)
				for _, a := range fresh.RecoveryReport().Actions {
					if strings.Contains(a, "rolled back the operation of lane") {
						rolled++
					}
				}
				for _, s := range []*mapped.Segment{fresh, seg} {
					require.NoError(t, s.CheckSanity())
					got, err := inPlaceDump(s)
					require.NoError(t, err)
					require.Equal(t, before, got, "%s key %d killed at %s: the map as before", which, i, step)
				}
				require.NoError(t, Destroy[Map[int64, int64]](fresh, "ip_ints"))
				require.NoError(t, Destroy[Map[string, int64]](fresh, "ip_strs"))
				require.True(t, seg.AllMemoryDeallocated(), "%s key %d killed at %s: every block freed", which, i, step)
				require.Equal(t, free0, seg.FreeMemory())
				require.NoError(t, fresh.Close())
			}
		}
	}
	assert.Equal(t, 4*2*3, rolled, "every kill was rolled back")
}

// mapPredictSplit says whether a Set of the new key k splits its leaf in
// place (splitLeaf), and if so whether k goes into the left half and
// whether the leaf is its parent's last child.
func mapPredictSplit[K comparable, V any](m *Map[K, V], k K) (split, left, last bool) {
	o, err := m.op("predict")
	if err != nil || m.root == 0 {
		return false, false, false
	}
	var path [maxMapDepth]pathEnt
	d, found, err := o.descend(&k, &path)
	if err != nil || found || d < 2 || o.g.inPlace(path[d-1]) || !o.g.splitInPlace(path[d-2], path[d-1]) {
		return false, false, false
	}
	leaf, parent := path[d-1], path[d-2]
	return true, leaf.idx < (leaf.n+1)/2, parent.idx == parent.n
}

const splitKeys = 2000 // keys below 2*splitKeys

// splitBuild makes the map "sp" of the keys below 2*splitKeys but those
// that are 3 mod 4, set in a fixed shuffled order: its leaves are filled
// unevenly, and some are full. The keys left out are splitCandidates.
func splitBuild(seg *mapped.Segment) (*Map[int64, int64], error) {
	m, err := Construct(seg, "sp", Map[int64, int64]{})
	if err != nil {
		return nil, err
	}
	for _, i := range rand.New(rand.NewPCG(7, 8)).Perm(2 * splitKeys) {
		if i%4 == 3 {
			continue
		}
		if err := m.Set(int64(i), int64(i)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// splitCandidates is the keys splitBuild leaves out, in a fixed shuffled
// order.
func splitCandidates() []int64 {
	var ks []int64
	for _, i := range rand.New(rand.NewPCG(9, 10)).Perm(2 * splitKeys) {
		if i%4 == 3 {
			ks = append(ks, int64(i))
		}
	}
	return ks
}

// childSplitInPlace: args are the segment, the key and the step to die
// at.
func childSplitInPlace(args []string) int {
	seg, err := kOpenSpec(args[0], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	k, _ := strconv.Atoi(args[1])
	step := args[2]
	splitHook = killAtStep(step)
	m, err := Find[Map[int64, int64]](seg, "sp")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if split, _, _ := mapPredictSplit(m, int64(k)); !split {
		fmt.Fprintf(os.Stderr, "key %d does not split its leaf in place\n", k)
		return 3
	}
	if err := m.Set(int64(k), -1); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0 // the step was not reached
}

// TestSplitInPlace: a Set that splits a full leaf in place leaves the map
// as a model says, whichever half the key goes to and wherever the leaf
// is among its parent's children.
func TestSplitInPlace(t *testing.T) {
	seg := newSeg(t)
	m, err := splitBuild(seg)
	require.NoError(t, err)
	model := map[int64]int64{}
	for i := range int64(2 * splitKeys) {
		if i%4 != 3 {
			model[i] = i
		}
	}
	kinds := map[[2]bool]int{}
	for _, k := range splitCandidates() {
		split, left, last := mapPredictSplit(m, k)
		require.NoError(t, m.Set(k, 100*k))
		model[k] = 100 * k
		if !split {
			continue
		}
		kinds[[2]bool{left, last}]++
		_, err := mapVerify(m, cmp.Compare[int64])
		require.NoError(t, err, "after the split that set %d", k)
		require.Equal(t, len(model), m.Len())
		for mk, mv := range model {
			v, ok := m.Get(mk)
			require.True(t, ok, "key %d", mk)
			require.Equal(t, mv, *v, "key %d", mk)
		}
	}
	t.Logf("in-place splits by (left half, last child): %v", kinds)
	for _, kind := range [][2]bool{{true, false}, {true, true}, {false, false}, {false, true}} {
		require.NotZero(t, kinds[kind], "no split of the kind (left half, last child) %v", kind)
	}
	require.NoError(t, seg.CheckSanity())
}

// TestSIGKILLDuringSplitInPlace kills a Set at each step of an in-place
// leaf split (the key in the left half, in the right half, the leaf the
// parent's last child or not) and checks that recovery rolls it back: the
// map as before, sound, and every block freed once it is destroyed.
func TestSIGKILLDuringSplitInPlace(t *testing.T) {
	spec := "file:" + filepath.Join(t.TempDir(), "split.seg")
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	// For each kind of split (the key in the left half or the right, the
	// leaf its parent's last child or not), how many of the candidates
	// to set first so that the next one splits so.
	cands := splitCandidates()
	scratch := newSeg(t)
	m, err := splitBuild(scratch)
	require.NoError(t, err)
	var firsts []int
	seen := map[[2]bool]bool{}
	for i, k := range cands {
		if split, left, last := mapPredictSplit(m, k); split && !seen[[2]bool{left, last}] {
			seen[[2]bool{left, last}] = true
			firsts = append(firsts, i)
		}
		require.NoError(t, m.Set(k, -k))
	}
	require.Len(t, firsts, 4, "kinds of split found: %v", seen)
	rolled := 0
	for _, first := range firsts {
		k := cands[first]
		for _, step := range []string{"saved", "written", "linked"} {
			m, err := splitBuild(seg)
			require.NoError(t, err)
			for _, c := range cands[:first] {
				require.NoError(t, m.Set(c, -c))
			}
			before, err := splitDump(seg)
			require.NoError(t, err)
			c := proctest.Start(t, "splitinplace", spec, strconv.Itoa(int(k)), step)
			code := c.Wait()
			require.Equal(t, -1, code, "key %d step %s: the child was killed: %s", k, step, c.Stderr())
			fresh, err := kOpenSpec(spec, mapped.OpenOnly)
			require.NoError(t, err)
			for _, a := range fresh.RecoveryReport().Actions {
				if strings.Contains(a, "rolled back the operation of lane") {
					rolled++
				}
			}
			for _, s := range []*mapped.Segment{fresh, seg} {
				require.NoError(t, s.CheckSanity())
				got, err := splitDump(s)
				require.NoError(t, err)
				require.Equal(t, before, got, "key %d killed at %s: the map as before", k, step)
			}
			require.NoError(t, Destroy[Map[int64, int64]](fresh, "sp"))
			require.True(t, seg.AllMemoryDeallocated(), "key %d killed at %s: every block freed", k, step)
			require.Equal(t, free0, seg.FreeMemory())
			require.NoError(t, fresh.Close())
		}
	}
	assert.Equal(t, 3*len(firsts), rolled, "every kill was rolled back")
}

// splitDump is the map's keys and values, checked by mapVerify first.
func splitDump(seg *mapped.Segment) (string, error) {
	m, err := Find[Map[int64, int64]](seg, "sp")
	if err != nil {
		return "", err
	}
	if _, err := mapVerify(m, cmp.Compare[int64]); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", m.n)
	for k, v := range m.All() {
		fmt.Fprintf(&b, " %d=%d", k, *v)
	}
	return b.String(), nil
}
