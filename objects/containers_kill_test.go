package objects

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// The container kill test. A child process runs random mutating calls on
// every kind of container until the parent kills it with SIGKILL at a
// random moment. Before each call the child appends the call to an
// intent log (one write(2) per line: a SIGKILL does not lose what the
// kernel was given, so no fsync is needed for this test), so that the
// parent knows every call that ran to its end and the one that may have
// been cut short. The parent keeps a Go model of every container,
// replays the log into it, and after each kill checks that the segment
// holds the model with or without the last call, through a fresh Open
// (which recovers the dead child's lanes) and through its own open that
// stayed attached the whole time; then that the allocator is sane and
// that destroying everything frees every block. It then rebuilds the
// containers from the model for the next child.
//
// Every value is derived from the sequence number of the call that wrote
// it (kVal, kStr), so a state compares as a short dump.

// kRec is a struct with a String and a Vector[String] in a Vector.
type kRec struct {
	ID   int64
	Name String
	Tags Vector[String]
}

// kNode is what NewInto allocates into kSlots.
type kNode struct{ A, B int64 }

type kSlots struct{ P [8]Ptr[kNode] }

const (
	kVI    = "k_vi"    // Vector[int64]
	kVS    = "k_vs"    // Vector[kRec]
	kNest  = "k_nest"  // Vector[kRec], destroyed and rebuilt often
	kStr   = "k_str"   // String
	kLI    = "k_li"    // List[int64]
	kLV    = "k_lv"    // List[Vector[int64]]
	kSlot  = "k_slots" // kSlots, for NewInto
	kNoPtr = -1        // a nil slot in the model
)

var kNames = []string{kVI, kVS, kNest, kStr, kLI, kLV, kSlot}

func kVal(seq int64, j int) int64 { return seq<<10 | int64(j) }

func kText(seq int64, n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(strconv.FormatInt(seq, 36))
		b.WriteByte('.')
	}
	return b.String()[:n]
}

func kVals(seq int64, n int) []int64 {
	xs := make([]int64, n)
	for j := range xs {
		xs[j] = kVal(seq, j)
	}
	return xs
}

// kOp is one logged call: seq, the call, and up to three arguments.
type kOp struct {
	seq     int64
	call    string
	a, b, c int
}

func (o kOp) String() string { return fmt.Sprintf("%d %s %d %d %d", o.seq, o.call, o.a, o.b, o.c) }

func parseKOp(line string) (kOp, error) {
	var o kOp
	_, err := fmt.Sscanf(line, "%d %s %d %d %d", &o.seq, &o.call, &o.a, &o.b, &o.c)
	return o, err
}

// kTypes names the containers' types, for counting calls by kind.
var kTypes = map[string]string{kVI: "Vector[int64]", kVS: "Vector[kRec]", kNest: "Vector[kRec]", kStr: "String", kLI: "List[int64]", kLV: "List[Vector[int64]]", kSlot: "Ptr"}

// kind is the call with its container's type, for counting:
// "Vector[kRec].Tags.Set", "Destroy Vector[kRec]".
func (o kOp) kind() string {
	cont, call, _ := strings.Cut(o.call, ".")
	switch cont {
	case "destroy":
		return "Destroy " + kTypes[call]
	case "create":
		return "Construct " + kTypes[call]
	}
	return kTypes[cont] + "." + call
}

// kRecM and kModel are the model: what the containers hold.
type kRecM struct {
	ID   int64
	Name string
	Tags []string
}

type kModel struct {
	Present map[string]bool
	VI      []int64
	VS      []kRecM
	Nest    []kRecM
	Str     string
	LI      []int64
	LV      [][]int64
	Slots   [8]int64 // kNoPtr: nil; otherwise the node's B
}

func newKModel() *kModel {
	m := &kModel{Present: map[string]bool{}}
	for k := range m.Slots {
		m.Slots[k] = kNoPtr
	}
	for _, n := range kNames {
		m.Present[n] = true
	}
	return m
}

// dump is the model as a string: equal dumps, equal states.
func (m *kModel) dump() string {
	var b strings.Builder
	for _, n := range kNames {
		fmt.Fprintf(&b, "%s:%v ", n, m.Present[n])
	}
	recs := func(rs []kRecM) {
		for _, r := range rs {
			fmt.Fprintf(&b, "{%d %q %q}", r.ID, r.Name, r.Tags)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\nvi %v\nvs ", m.VI)
	recs(m.VS)
	b.WriteString("nest ")
	recs(m.Nest)
	fmt.Fprintf(&b, "str %q\nli %v\nlv %v\nslots %v\n", m.Str, m.LI, m.LV, m.Slots)
	return b.String()
}

func (m *kModel) clone() *kModel {
	c := *m
	c.Present = map[string]bool{}
	for k, v := range m.Present {
		c.Present[k] = v
	}
	c.VI = slices.Clone(m.VI)
	cr := func(rs []kRecM) []kRecM {
		out := make([]kRecM, len(rs))
		for i, r := range rs {
			out[i] = kRecM{r.ID, r.Name, slices.Clone(r.Tags)}
		}
		return out
	}
	c.VS, c.Nest = cr(m.VS), cr(m.Nest)
	c.LI = slices.Clone(m.LI)
	c.LV = make([][]int64, len(m.LV))
	for i, v := range m.LV {
		c.LV[i] = slices.Clone(v)
	}
	return &c
}

// recs is the model of the Vector[kRec] named name.
func (m *kModel) recs(name string) *[]kRecM {
	if name == kNest {
		return &m.Nest
	}
	return &m.VS
}

// apply changes the model as the call o does.
func (m *kModel) apply(o kOp) {
	s, a, b, c := o.seq, o.a, o.b, o.c
	cont, call, _ := strings.Cut(o.call, ".")
	switch cont {
	case "destroy":
		m.Present[call] = false
		switch call {
		case kVI:
			m.VI = nil
		case kVS, kNest:
			*m.recs(call) = nil
		case kStr:
			m.Str = ""
		case kLI:
			m.LI = nil
		case kLV:
			m.LV = nil
		}
	case "create":
		m.Present[call] = true
	case kVI:
		switch call {
		case "Append":
			m.VI = append(m.VI, kVals(s, a)...)
		case "Insert":
			m.VI = slices.Insert(m.VI, a, kVals(s, b)...)
		case "Delete":
			m.VI = slices.Delete(m.VI, a, b)
		case "Truncate":
			m.VI = m.VI[:a]
		case "Resize":
			if a <= len(m.VI) {
				m.VI = m.VI[:a]
			} else {
				m.VI = append(m.VI, make([]int64, a-len(m.VI))...)
			}
		case "Reserve":
		case "Clear":
			m.VI = m.VI[:0]
		default:
			panic(o.call)
		}
	case kVS, kNest:
		rs := m.recs(cont)
		switch call {
		case "Append":
			*rs = append(*rs, kRecM{ID: s})
		case "Insert":
			*rs = slices.Insert(*rs, a, kRecM{ID: s})
		case "Delete":
			*rs = slices.Delete(*rs, a, b)
		case "Truncate":
			*rs = (*rs)[:a]
		case "Resize":
			if a <= len(*rs) {
				*rs = (*rs)[:a]
			} else {
				*rs = append(*rs, make([]kRecM, a-len(*rs))...)
			}
		case "Clear":
			*rs = (*rs)[:0]
		case "Name.Set":
			(*rs)[a].Name = kText(s, b)
		case "Tags.Append":
			(*rs)[a].Tags = append((*rs)[a].Tags, "")
		case "Tags.Insert":
			(*rs)[a].Tags = slices.Insert((*rs)[a].Tags, b, "")
		case "Tags.Set":
			(*rs)[a].Tags[b] = kText(s, c)
		case "Tags.Delete":
			(*rs)[a].Tags = slices.Delete((*rs)[a].Tags, b, c)
		default:
			panic(o.call)
		}
	case kStr:
		m.Str = kText(s, a)
	case kLI:
		switch call {
		case "PushBack":
			m.LI = append(m.LI, s)
		case "PushFront":
			m.LI = slices.Insert(m.LI, 0, s)
		case "InsertAfter":
			m.LI = slices.Insert(m.LI, a+1, s)
		case "InsertBefore":
			m.LI = slices.Insert(m.LI, a, s)
		case "Remove":
			m.LI = slices.Delete(m.LI, a, a+1)
		default:
			panic(o.call)
		}
	case kLV:
		switch call {
		case "PushBack":
			m.LV = append(m.LV, nil)
		case "PushFront":
			m.LV = slices.Insert(m.LV, 0, nil)
		case "InsertAfter":
			m.LV = slices.Insert(m.LV, a+1, nil)
		case "InsertBefore":
			m.LV = slices.Insert(m.LV, a, nil)
		case "Remove":
			m.LV = slices.Delete(m.LV, a, a+1)
		case "Value.Append":
			m.LV[a] = append(m.LV[a], kVals(s, b)...)
		case "Value.Truncate":
			m.LV[a] = m.LV[a][:b]
		default:
			panic(o.call)
		}
	case kSlot:
		switch call {
		case "NewInto":
			m.Slots[a] = 0
		case "Set":
			m.Slots[a] = s
		default:
			panic(o.call)
		}
	default:
		panic(o.call)
	}
}

// kState reads what seg holds into a model.
func kState(seg *mapped.Segment) (*kModel, error) {
	m := newKModel()
	var err error
	find := func(name string, f func() error) {
		if err != nil {
			return
		}
		err = f()
		if errors.Is(err, mapped.ErrNotFound) {
			m.Present[name], err = false, nil
		}
	}
	recs := func(name string) func() error {
		return func() error {
			v, err := Find[Vector[kRec]](seg, name)
			if err != nil {
				return err
			}
			rs := m.recs(name)
			for _, r := range v.All() {
				var tags []string
				for _, t := range r.Tags.All() {
					tags = append(tags, t.String())
				}
				*rs = append(*rs, kRecM{ID: r.ID, Name: r.Name.String(), Tags: tags})
			}
			return nil
		}
	}
	find(kVI, func() error {
		v, err := Find[Vector[int64]](seg, kVI)
		if err == nil {
			m.VI = slices.Clone(v.Slice())
		}
		return err
	})
	find(kVS, recs(kVS))
	find(kNest, recs(kNest))
	find(kStr, func() error {
		s, err := Find[String](seg, kStr)
		if err == nil {
			m.Str = s.String()
		}
		return err
	})
	find(kLI, func() error {
		l, err := Find[List[int64]](seg, kLI)
		if err != nil {
			return err
		}
		for e := l.Front(); e != nil; e = e.Next() {
			m.LI = append(m.LI, *e.Value())
		}
		if len(m.LI) != l.Len() {
			return fmt.Errorf("%s: %d linked, Len %d", kLI, len(m.LI), l.Len())
		}
		for e, k := l.Back(), len(m.LI)-1; e != nil; e, k = e.Prev(), k-1 {
			if k < 0 || *e.Value() != m.LI[k] {
				return fmt.Errorf("%s: the back links disagree at %d", kLI, k)
			}
		}
		return nil
	})
	find(kLV, func() error {
		l, err := Find[List[Vector[int64]]](seg, kLV)
		if err != nil {
			return err
		}
		for p := range l.All() {
			m.LV = append(m.LV, slices.Clone(p.Slice()))
		}
		n := 0
		for e := l.Back(); e != nil; e = e.Prev() {
			n++
		}
		if n != l.Len() || len(m.LV) != n {
			return fmt.Errorf("%s: %d linked forwards, %d backwards, Len %d", kLV, len(m.LV), n, l.Len())
		}
		return nil
	})
	find(kSlot, func() error {
		s, err := Find[kSlots](seg, kSlot)
		if err != nil {
			return err
		}
		for k := range s.P {
			if n := s.P[k].Get(); n != nil {
				m.Slots[k] = n.B
			}
		}
		return nil
	})
	return m, err
}

// kDestroyAll destroys every container in seg (and the slots' nodes).
func kDestroyAll(seg *mapped.Segment) error {
	if s, err := Find[kSlots](seg, kSlot); err == nil {
		for k := range s.P {
			if n := s.P[k].Get(); n != nil {
				s.P[k].Set(nil)
				if err := Delete(seg, n); err != nil {
					return err
				}
			}
		}
	}
	errs := []error{
		Destroy[Vector[int64]](seg, kVI),
		Destroy[Vector[kRec]](seg, kVS),
		Destroy[Vector[kRec]](seg, kNest),
		Destroy[String](seg, kStr),
		Destroy[List[int64]](seg, kLI),
		Destroy[List[Vector[int64]]](seg, kLV),
		Destroy[kSlots](seg, kSlot),
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, mapped.ErrNotFound) {
			return err
		}
	}
	return nil
}

// kCreate constructs the empty container name.
func kCreate(seg *mapped.Segment, name string) error {
	var err error
	switch name {
	case kVI:
		_, err = Construct(seg, name, Vector[int64]{})
	case kVS, kNest:
		_, err = Construct(seg, name, Vector[kRec]{})
	case kStr:
		_, err = Construct(seg, name, String{})
	case kLI:
		_, err = Construct(seg, name, List[int64]{})
	case kLV:
		_, err = Construct(seg, name, List[Vector[int64]]{})
	case kSlot:
		_, err = Construct(seg, name, kSlots{})
	default:
		panic(name)
	}
	return err
}

// kBuild constructs in seg (where none of them exists) what m holds.
func kBuild(seg *mapped.Segment, m *kModel) error {
	for _, n := range kNames {
		if !m.Present[n] {
			continue
		}
		if err := kCreate(seg, n); err != nil {
			return err
		}
	}
	var errs []error
	try := func(err error) { errs = append(errs, err) }
	if m.Present[kVI] && len(m.VI) > 0 {
		v, _ := Find[Vector[int64]](seg, kVI)
		try(v.Append(m.VI...))
	}
	for _, n := range []string{kVS, kNest} {
		if !m.Present[n] {
			continue
		}
		v, _ := Find[Vector[kRec]](seg, n)
		for i, r := range *m.recs(n) {
			try(v.Append(kRec{ID: r.ID}))
			try(v.At(i).Name.Set(r.Name))
			for j, tag := range r.Tags {
				try(v.At(i).Tags.Append(String{}))
				try(v.At(i).Tags.At(j).Set(tag))
			}
		}
	}
	if m.Present[kStr] {
		s, _ := Find[String](seg, kStr)
		try(s.Set(m.Str))
	}
	if m.Present[kLI] {
		l, _ := Find[List[int64]](seg, kLI)
		for _, x := range m.LI {
			_, err := l.PushBack(x)
			try(err)
		}
	}
	if m.Present[kLV] {
		l, _ := Find[List[Vector[int64]]](seg, kLV)
		for _, xs := range m.LV {
			e, err := l.PushBack(Vector[int64]{})
			try(err)
			if err == nil && len(xs) > 0 {
				try(e.Value().Append(xs...))
			}
		}
	}
	if m.Present[kSlot] {
		s, _ := Find[kSlots](seg, kSlot)
		for k, b := range m.Slots {
			if b != kNoPtr {
				n, err := NewInto(&s.P[k])
				try(err)
				if err == nil {
					n.B = b
				}
			}
		}
	}
	return errors.Join(errs...)
}

// kFind is Find, remembered in cache (the child's calls are cheaper, so
// that more kills land inside them).
func kFind[T any](seg *mapped.Segment, cache map[string]unsafe.Pointer, name string) (*T, error) {
	if p := cache[name]; p != nil {
		return (*T)(p), nil
	}
	v, err := Find[T](seg, name)
	if err == nil {
		cache[name] = unsafe.Pointer(v)
	}
	return v, err
}

// kPick chooses the next call, valid for what seg holds now, and returns
// it with the function that makes it.
func kPick(rng *rand.Rand, seg *mapped.Segment, cache map[string]unsafe.Pointer, seq int64) (kOp, func() error) {
	op := kOp{seq: seq}
	name := kNames[rng.IntN(len(kNames))]
	var err error
	var (
		vi   *Vector[int64]
		vs   *Vector[kRec]
		str  *String
		li   *List[int64]
		lv   *List[Vector[int64]]
		slot *kSlots
	)
	switch name {
	case kVI:
		vi, err = kFind[Vector[int64]](seg, cache, name)
	case kVS, kNest:
		vs, err = kFind[Vector[kRec]](seg, cache, name)
	case kStr:
		str, err = kFind[String](seg, cache, name)
	case kLI:
		li, err = kFind[List[int64]](seg, cache, name)
	case kLV:
		lv, err = kFind[List[Vector[int64]]](seg, cache, name)
	case kSlot:
		slot, err = kFind[kSlots](seg, cache, name)
	}
	if errors.Is(err, mapped.ErrNotFound) {
		op.call = "create." + name
		return op, func() error { return kCreate(seg, name) }
	}
	if err != nil {
		return op, func() error { return err }
	}
	if name != kSlot && rng.IntN(40) == 0 {
		op.call = "destroy." + name
		return op, func() error {
			delete(cache, name)
			switch name {
			case kVI:
				return Destroy[Vector[int64]](seg, name)
			case kVS, kNest:
				return Destroy[Vector[kRec]](seg, name)
			case kStr:
				return Destroy[String](seg, name)
			case kLI:
				return Destroy[List[int64]](seg, name)
			}
			return Destroy[List[Vector[int64]]](seg, name)
		}
	}
	set := func(call string, args ...int) {
		op.call = name + "." + call
		for i, a := range args {
			*[]*int{&op.a, &op.b, &op.c}[i] = a
		}
	}
	// strLen is a String length: inline, short, or long enough to grow.
	strLen := func() int {
		switch rng.IntN(3) {
		case 0:
			return rng.IntN(8)
		case 1:
			return 8 + rng.IntN(24)
		}
		return 32 + rng.IntN(100)
	}
	switch name {
	case kVI:
		n := vi.Len()
		grow := n < 400
		switch r := rng.IntN(10); {
		case r < 2 && grow:
			set("Append", 1)
			return op, func() error { return vi.Append(kVal(seq, 0)) }
		case r < 3 && grow:
			k := 1 + rng.IntN(70)
			set("Append", k)
			return op, func() error { return vi.Append(kVals(seq, k)...) }
		case r < 5 && grow:
			i, k := rng.IntN(n+1), 1+rng.IntN(40) // up to 32 in place, if the capacity holds them
			set("Insert", i, k)
			return op, func() error { return vi.Insert(i, kVals(seq, k)...) }
		case r < 7 && n > 0:
			i := rng.IntN(n)
			j := i + rng.IntN(min(n-i, 30)+1)
			set("Delete", i, j)
			return op, func() error { return vi.Delete(i, j) }
		case r < 8:
			k := rng.IntN(n + 1)
			set("Truncate", k)
			return op, func() error { return vi.Truncate(k) }
		case r < 9:
			k := rng.IntN(n + 60)
			set("Resize", k)
			return op, func() error { return vi.Resize(k) }
		default:
			if rng.IntN(4) == 0 {
				set("Clear")
				return op, vi.Clear
			}
			k := rng.IntN(2*n + 100)
			set("Reserve", k)
			return op, func() error { return vi.Reserve(k) }
		}
	case kVS, kNest:
		n := vs.Len()
		if n == 0 || (n < 24 && rng.IntN(5) == 0) {
			if n > 0 && rng.IntN(2) == 0 {
				i := rng.IntN(n + 1)
				set("Insert", i)
				return op, func() error { return vs.Insert(i, kRec{ID: seq}) }
			}
			set("Append")
			return op, func() error { return vs.Append(kRec{ID: seq}) }
		}
		i := rng.IntN(n)
		r := vs.At(i)
		nt := r.Tags.Len()
		switch x := rng.IntN(14); {
		case x < 1:
			j := i + rng.IntN(min(n-i, 4)+1)
			set("Delete", i, j)
			return op, func() error { return vs.Delete(i, j) }
		case x < 2:
			k := rng.IntN(n + 1)
			if rng.IntN(3) == 0 {
				k = max(n-1, 0)
			}
			set("Truncate", k)
			return op, func() error { return vs.Truncate(k) }
		case x < 3 && n < 24:
			k := n + rng.IntN(3)
			set("Resize", k)
			return op, func() error { return vs.Resize(k) }
		case x < 4 && rng.IntN(4) == 0:
			set("Clear")
			return op, vs.Clear
		case x < 7:
			k := strLen()
			set("Name.Set", i, k)
			return op, func() error { return r.Name.Set(kText(seq, k)) }
		case x < 9 && nt < 12:
			if nt > 0 && rng.IntN(2) == 0 {
				j := rng.IntN(nt + 1)
				set("Tags.Insert", i, j)
				return op, func() error { return r.Tags.Insert(j, String{}) }
			}
			set("Tags.Append", i)
			return op, func() error { return r.Tags.Append(String{}) }
		case x < 12 && nt > 0:
			j, k := rng.IntN(nt), strLen()
			set("Tags.Set", i, j, k)
			return op, func() error { return r.Tags.At(j).Set(kText(seq, k)) }
		case nt > 0:
			j := rng.IntN(nt)
			k := j + rng.IntN(min(nt-j, 3)+1)
			set("Tags.Delete", i, j, k)
			return op, func() error { return r.Tags.Delete(j, k) }
		}
		k := strLen()
		set("Name.Set", i, k)
		return op, func() error { return r.Name.Set(kText(seq, k)) }
	case kStr:
		k := strLen()
		set("Set", k)
		return op, func() error { return str.Set(kText(seq, k)) }
	case kLI, kLV:
		n := 0
		if li != nil {
			n = li.Len()
		} else {
			n = lv.Len()
		}
		x := rng.IntN(10)
		if n > 40 {
			x = 9
		}
		i := 0
		if n > 0 {
			i = rng.IntN(n)
		}
		if li != nil {
			e := li.Front()
			for range i {
				e = e.Next()
			}
			switch {
			case x < 2 || n == 0:
				set("PushBack")
				return op, func() error { _, err := li.PushBack(seq); return err }
			case x < 4:
				set("PushFront")
				return op, func() error { _, err := li.PushFront(seq); return err }
			case x < 6:
				set("InsertAfter", i)
				return op, func() error { _, err := li.InsertAfter(seq, e); return err }
			case x < 8:
				set("InsertBefore", i)
				return op, func() error { _, err := li.InsertBefore(seq, e); return err }
			}
			set("Remove", i)
			return op, func() error { return li.Remove(e) }
		}
		e := lv.Front()
		for range i {
			e = e.Next()
		}
		switch {
		case x < 1 || n == 0:
			set("PushBack")
			return op, func() error { _, err := lv.PushBack(Vector[int64]{}); return err }
		case x < 2:
			set("PushFront")
			return op, func() error { _, err := lv.PushFront(Vector[int64]{}); return err }
		case x < 3:
			set("InsertAfter", i)
			return op, func() error { _, err := lv.InsertAfter(Vector[int64]{}, e); return err }
		case x < 4:
			set("InsertBefore", i)
			return op, func() error { _, err := lv.InsertBefore(Vector[int64]{}, e); return err }
		case x < 7 && e.Value().Len() < 200:
			k := 1 + rng.IntN(20)
			set("Value.Append", i, k)
			return op, func() error { return e.Value().Append(kVals(seq, k)...) }
		case x < 8:
			k := rng.IntN(e.Value().Len() + 1)
			set("Value.Truncate", i, k)
			return op, func() error { return e.Value().Truncate(k) }
		}
		set("Remove", i)
		return op, func() error { return lv.Remove(e) }
	}
	// kSlot: NewInto a nil slot, or set a node's word.
	k := rng.IntN(len(slot.P))
	if slot.P[k].IsNil() {
		set("NewInto", k)
		return op, func() error { _, err := NewInto(&slot.P[k]); return err }
	}
	set("Set", k)
	return op, func() error { slot.P[k].Get().B = seq; return nil }
}

func kOpenSpec(spec string, mode mapped.Mode, opts ...mapped.Option) (*mapped.Segment, error) {
	return mapped.Open(kBacking(spec), mode, opts...)
}

func kBacking(spec string) backing.Backing {
	if name, ok := strings.CutPrefix(spec, "shm:"); ok {
		return shm.Named(name)
	}
	return file.Path(strings.TrimPrefix(spec, "file:"))
}

func childKillContainers(args []string) int {
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
	rng := rand.New(rand.NewPCG(seed, 13))
	cache := map[string]unsafe.Pointer{}
	// Ready once running: a kill soon after the line lands in the loop,
	// not in the start-up.
	for ready := seq + 20; ; seq++ {
		if seq == ready {
			fmt.Println("ready")
		}
		atomic.StoreUint64(log.phase(), kPicking)
		op, call := kPick(rng, seg, cache, seq)
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

// kLog is the child's intent log: a file mapped shared, so that a line
// is in the page cache (where a SIGKILL cannot take it back) as soon as
// it is stored, without a system call per line, which would take most of
// the child's time and leave few kills inside the calls. A line is padded
// with spaces to whole words and its last word, which ends in a newline,
// is stored last, atomically: the reader takes only the lines that end
// in one.
type kLog struct {
	mem []byte
	n   int
}

const kLogSize = 16 << 20

func openKLog(path string) (*kLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(kLogSize); err != nil {
		return nil, err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, kLogSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &kLog{mem: mem, n: 8}, nil
}

// phase is the log's first word: what the child is doing.
func (l *kLog) phase() *uint64 { return (*uint64)(unsafe.Pointer(&l.mem[0])) }

// The phases of the child's loop.
const (
	kStarting = iota // before its first call
	kPicking         // choosing the next call
	kLogging         // writing its intent
	kCalling         // in the call of the last line
	kPhases
)

var kPhaseNames = [kPhases]string{"starting", "choosing a call", "logging it", "in the call"}

func (l *kLog) add(line string) error {
	n := (len(line) + 1 + 7) &^ 7
	if l.n+n > len(l.mem) {
		return errors.New("intent log full")
	}
	rec := l.mem[l.n : l.n+n]
	copy(rec, line)
	for i := len(line); i < n-1; i++ {
		rec[i] = ' '
	}
	var last [8]byte
	copy(last[:], rec[n-8:])
	last[7] = '\n'
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&rec[n-8])), binary.LittleEndian.Uint64(last[:]))
	l.n += n
	return nil
}

// readKOps reads the complete lines of the intent log at path, and the
// phase the child was killed in.
func readKOps(t *testing.T, path string) (ops []kOp, phase int) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), 8)
	phase = int(b[0])
	require.Less(t, phase, kPhases)
	b = b[8:]
	for {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok || bytes.IndexByte(line, 0) >= 0 {
			break // the end, or a line cut short: its call never started
		}
		o, err := parseKOp(strings.TrimSpace(string(line)))
		require.NoError(t, err, string(line))
		ops = append(ops, o)
		b = rest
	}
	return ops, phase
}

// kLaneStats counts, per call kind, the kills that landed inside a lane.
type kLaneStats struct {
	rolled, finished map[string]int
}

func TestSIGKILLDuringContainerCalls(t *testing.T) {
	kills := 400
	if testing.Short() {
		kills = 30
	}
	if v := os.Getenv("MAPSTORE_CONTAINER_KILLS"); v != "" {
		var err error
		kills, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kill.seg")
		killContainers(t, "file:"+path, kills)
	})
	t.Run("shm", func(t *testing.T) {
		name := fmt.Sprintf("mapstore-killcont-%d", os.Getpid())
		t.Cleanup(func() { _ = shm.Remove(name) })
		killContainers(t, "shm:"+name, kills)
	})
}

func killContainers(t *testing.T, spec string, kills int) {
	start := time.Now()
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(8<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	m := newKModel()
	require.NoError(t, kBuild(seg, m))
	// The log on tmpfs where there is one: a page fault on a file mapping
	// of ext4 takes long enough to catch many of the kills.
	logDir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "mapstore-intents-"); err == nil {
		logDir = d
		t.Cleanup(func() { _ = os.RemoveAll(d) })
	}
	logPath := filepath.Join(logDir, "intents.log")
	rng := rand.New(rand.NewPCG(uint64(len(spec)), 17))
	seq := int64(1)
	st := kLaneStats{rolled: map[string]int{}, finished: map[string]int{}}
	calls, lastDone, laneKills := 0, 0, 0
	var phases [kPhases]int
	for k := range kills {
		c := proctest.Start(t, "killcont", spec, logPath, strconv.FormatInt(seq, 10), strconv.FormatUint(rng.Uint64(), 10))
		c.Expect("ready")
		// From a microsecond to about 4 ms, spread evenly over the scales.
		time.Sleep(time.Duration(1<<rng.IntN(13)+rng.IntN(1<<rng.IntN(13))) * time.Microsecond)
		c.Kill()
		require.Equal(t, -1, c.Cmd.ProcessState.ExitCode(), "the child ran until killed: %s", c.Stderr())

		ops, phase := readKOps(t, logPath)
		phases[phase]++
		calls += len(ops)
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

		// A fresh Open finds the child dead and recovers its lanes.
		fresh, err := kOpenSpec(spec, mapped.OpenOnly)
		require.NoError(t, err, "kill %d", k)
		for _, a := range fresh.RecoveryReport().Actions {
			switch {
			case strings.Contains(a, "rolled back the operation of lane"):
				st.rolled[last.kind()]++
				laneKills++
			case strings.Contains(a, "finished the committed operation of lane"):
				st.finished[last.kind()]++
				laneKills++
			}
		}
		var got string
		for _, s := range []*mapped.Segment{fresh, seg} { // the fresh open, and the one that stayed attached
			require.NoError(t, s.CheckSanity(), "kill %d after %v", k, last)
			state, err := kState(s)
			require.NoError(t, err, "kill %d after %v", k, last)
			got = state.dump()
			if got != before.dump() && got != after.dump() {
				require.Failf(t, "a container holds neither the state before nor the one after the interrupted call",
					"kill %d during %v\nbefore:\n%s\nafter:\n%s\ngot:\n%s", k, last, before.dump(), after.dump(), got)
			}
		}
		if got == after.dump() {
			m = after
			if len(ops) > 0 {
				lastDone++
			}
		} else {
			m = before
		}

		// Destroying everything frees every block; then the state is built
		// again from the model for the next child, through one open or the
		// other.
		by := []*mapped.Segment{fresh, seg}[k%2]
		require.NoError(t, kDestroyAll(by), "kill %d", k)
		require.True(t, seg.AllMemoryDeallocated(), "kill %d after %v: every block freed", k, last)
		require.True(t, fresh.AllMemoryDeallocated())
		require.NoError(t, seg.CheckSanity())
		if slices.IndexFunc(m.Slots[:], func(b int64) bool { return b == kNoPtr }) < 0 {
			for i := range m.Slots { // free the slots, so that NewInto keeps running
				m.Slots[i] = kNoPtr
			}
		}
		require.NoError(t, kBuild(by, m), "kill %d", k)
		require.NoError(t, fresh.Close())
	}
	total := 0
	var lines []string
	for _, kind := range slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, mm := range []map[string]int{st.rolled, st.finished} {
			for kd := range mm {
				if !seen[kd] {
					seen[kd] = true
					if !yield(kd) {
						return
					}
				}
			}
		}
	}) {
		lines = append(lines, fmt.Sprintf("%s: %d rolled back, %d finished", kind, st.rolled[kind], st.finished[kind]))
		total += st.rolled[kind] + st.finished[kind]
	}
	sort.Strings(lines)
	rolled, finished := 0, 0
	for _, n := range st.rolled {
		rolled += n
	}
	for _, n := range st.finished {
		finished += n
	}
	var where []string
	for p, n := range phases {
		where = append(where, fmt.Sprintf("%d %s", n, kPhaseNames[p]))
	}
	t.Logf("%s: %d kills (%s) in %v; %d calls, the last one stood after %d kills; %d kills inside a lane (%d rolled back, %d finished):\n%s",
		spec[:strings.IndexByte(spec, ':')], kills, strings.Join(where, ", "), time.Since(start).Round(time.Millisecond), calls, lastDone,
		laneKills, rolled, finished, strings.Join(lines, "\n"))
	if !testing.Short() {
		assert.Positive(t, rolled, "some kills landed in a lane before its commit")
		assert.Positive(t, finished, "some kills landed in a lane after its commit")
	}
}
