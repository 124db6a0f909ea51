package objects

import (
	"container/list"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// State-machine property tests: each container against a Go model (a
// slice, a string, container/list), driven by random sequences of every
// method, nested containers included. After each step the container must
// equal the model and the segment must be sane; at the end, destroying
// the container must give back every byte.

var propSegs atomic.Int64

// propSegSize is large enough that no check grows the segment (so that
// free memory after the destroy must be exactly what it was before).
const propSegSize = 8 << 20

// propSeg opens a fresh file segment in dir for one rapid check; it is
// closed and removed when the check ends.
func propSeg(t *rapid.T, dir string) *mapped.Segment {
	path := filepath.Join(dir, fmt.Sprintf("prop%d.seg", propSegs.Add(1)))
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(propSegSize))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = seg.Close()
		_ = file.Remove(path)
	})
	return seg
}

// propRoot makes the container under test: a named object or an
// anonymous one (chosen by the check), and returns the function that
// destroys it the matching way.
func propRoot[C any](t *rapid.T, seg *mapped.Segment) (*C, func() error) {
	if rapid.Bool().Draw(t, "named") {
		c, err := Construct(seg, "root", *new(C))
		require.NoError(t, err)
		return c, func() error { return Destroy[C](seg, "root") }
	}
	c, err := New[C](seg)
	require.NoError(t, err)
	return c, func() error { return Delete(seg, c) }
}

// propEnd destroys the container and checks that every byte is back.
func propEnd(t *rapid.T, seg *mapped.Segment, free0 int64, destroy func() error) {
	require.NoError(t, destroy())
	assert.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated(), "all memory deallocated after destroy")
	require.Equal(t, int64(propSegSize), seg.Size(), "the segment did not grow")
	assert.Equal(t, free0, seg.FreeMemory(), "free memory back at its start")
}

// strGen draws strings of the lengths String stores differently: 0..7
// (inline), 8..100, and longer ones that outgrow a block. The bytes
// after a short drawn prefix follow a drawn pattern (cheap to draw, and
// still varied).
func strGen() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		n := rapid.OneOf(rapid.IntRange(0, 7), rapid.IntRange(8, 100), rapid.IntRange(101, 600)).Draw(t, "len")
		prefix := rapid.SliceOfN(rapid.Byte(), 0, min(n, 10)).Draw(t, "prefix")
		seed := rapid.Uint64().Draw(t, "pattern")
		b := make([]byte, n)
		copy(b, prefix)
		for i := len(prefix); i < n; i++ {
			b[i] = byte(seed >> (8 * (i % 8)))
		}
		return string(b)
	})
}

// equalVec checks a Vector[int64] against its model through every reader.
func equalVec(t require.TestingT, v *Vector[int64], model []int64) {
	require.Equal(t, len(model), v.Len())
	require.GreaterOrEqual(t, v.Cap(), v.Len())
	s := v.Slice()
	require.Len(t, s, len(model))
	require.True(t, slices.Equal(model, s), "Slice %v, want %v", s, model)
	for i := range model {
		require.Equal(t, model[i], *v.At(i), "At(%d)", i)
	}
	k := 0
	for i, p := range v.All() {
		require.Equal(t, k, i)
		require.Equal(t, model[i], *p, "All at %d", i)
		k++
	}
	require.Equal(t, len(model), k, "All yields Len elements")
	if len(model) > 1 {
		k = 0
		for range v.All() {
			k++
			break
		}
		require.Equal(t, 1, k, "All stops when the loop breaks")
	}
}

func TestVectorProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		v, destroy := propRoot[Vector[int64]](t, seg)
		var model []int64
		elems := rapid.Int64()
		t.Repeat(map[string]func(*rapid.T){
			"Append1": func(t *rapid.T) {
				x := elems.Draw(t, "x")
				c := v.Cap()
				require.NoError(t, v.Append(x))
				if len(model) < c {
					assert.Equal(t, c, v.Cap(), "an append within capacity keeps it")
				}
				model = append(model, x)
			},
			"AppendMany": func(t *rapid.T) {
				xs := rapid.SliceOfN(elems, 0, 70).Draw(t, "xs")
				require.NoError(t, v.Append(xs...))
				model = append(model, xs...)
			},
			"Insert": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				// Up to 32 elements fit in place when there is room; more move.
				xs := rapid.SliceOfN(elems, 0, 50).Draw(t, "xs")
				c := v.Cap()
				require.NoError(t, v.Insert(i, xs...))
				if len(model)+len(xs) <= c {
					assert.Equal(t, c, v.Cap(), "an insert within capacity keeps it")
				}
				model = slices.Insert(model, i, xs...)
			},
			"Delete": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				j := rapid.IntRange(i, len(model)).Draw(t, "j")
				require.NoError(t, v.Delete(i, j))
				model = slices.Delete(model, i, j)
			},
			"Truncate": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)).Draw(t, "n")
				require.NoError(t, v.Truncate(n))
				model = model[:n]
			},
			"Resize": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)+80).Draw(t, "n")
				require.NoError(t, v.Resize(n))
				if n <= len(model) {
					model = model[:n]
				} else {
					model = append(model, make([]int64, n-len(model))...)
				}
			},
			"Reserve": func(t *rapid.T) {
				n := rapid.IntRange(0, v.Cap()+200).Draw(t, "n")
				c := v.Cap()
				require.NoError(t, v.Reserve(n))
				assert.GreaterOrEqual(t, v.Cap(), max(n, c))
			},
			"Clear": func(t *rapid.T) {
				c := v.Cap()
				require.NoError(t, v.Clear())
				assert.Equal(t, c, v.Cap(), "Clear keeps the capacity")
				model = model[:0]
			},
			"SetAt": func(t *rapid.T) {
				if len(model) == 0 {
					t.Skip("empty")
				}
				i := rapid.IntRange(0, len(model)-1).Draw(t, "i")
				x := elems.Draw(t, "x")
				*v.At(i) = x
				model[i] = x
			},
			"SortSlice": func(t *rapid.T) {
				slices.Sort(v.Slice())
				slices.Sort(model)
			},
			"": func(t *rapid.T) {
				equalVec(t, v, model)
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}

func TestStringProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		s, destroy := propRoot[String](t, seg)
		model := ""
		set := func(t *rapid.T, v string) {
			require.NoError(t, s.Set(v))
			model = v
		}
		t.Repeat(map[string]func(*rapid.T){
			"Set":  func(t *rapid.T) { set(t, strGen().Draw(t, "v")) },
			"Grow": func(t *rapid.T) { set(t, model+strGen().Draw(t, "more")) },
			"Shrink": func(t *rapid.T) {
				set(t, model[:rapid.IntRange(0, len(model)).Draw(t, "n")])
			},
			"SetSame": func(t *rapid.T) { set(t, strings.Clone(model)) },
			"Compare": func(t *rapid.T) {
				var other string
				switch rapid.IntRange(0, 4).Draw(t, "kind") {
				case 0:
					other = strGen().Draw(t, "other")
				case 1:
					other = model + "\x00"
				case 2:
					other = model + "z"
				case 3:
					other = model[:rapid.IntRange(0, len(model)).Draw(t, "n")]
				default: // one byte one up or down
					if model == "" {
						t.Skip("empty")
					}
					b := []byte(model)
					i := rapid.IntRange(0, len(b)-1).Draw(t, "i")
					b[i] += byte(rapid.SampledFrom([]int{1, -1}).Draw(t, "d"))
					other = string(b)
				}
				assert.Equal(t, model == other, s.Equal(other), "Equal(%q) of %q", other, model)
				assert.Equal(t, strings.Compare(model, other), s.Compare(other), "Compare(%q) of %q", other, model)
			},
			"": func(t *rapid.T) {
				require.Equal(t, model, s.String())
				require.Equal(t, len(model), s.Len())
				require.Equal(t, model, string(s.Bytes()))
				require.True(t, s.Equal(model))
				require.Zero(t, s.Compare(model))
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}

// nthElem is element i of l and of its model, walking from the front.
func nthElem[T any](l *List[T], model *list.List, i int) (*ListElement[T], *list.Element) {
	e, m := l.Front(), model.Front()
	for range i {
		e, m = e.Next(), m.Next()
	}
	return e, m
}

// equalList checks a List[int64] against its model: length, both
// directions of links, and All.
func equalList(t require.TestingT, l *List[int64], model *list.List) {
	require.Equal(t, model.Len(), l.Len())
	var fwd, back, want, wantBack, all []int64
	for m := model.Front(); m != nil; m = m.Next() {
		want = append(want, m.Value.(int64))
	}
	for m := model.Back(); m != nil; m = m.Prev() {
		wantBack = append(wantBack, m.Value.(int64))
	}
	for e := l.Front(); e != nil && len(fwd) <= len(want); e = e.Next() {
		fwd = append(fwd, *e.Value())
	}
	for e := l.Back(); e != nil && len(back) <= len(want); e = e.Prev() {
		back = append(back, *e.Value())
	}
	for p := range l.All() {
		all = append(all, *p)
	}
	require.Equal(t, want, fwd, "front to back")
	require.Equal(t, wantBack, back, "back to front")
	require.Equal(t, want, all, "All")
	if model.Len() > 0 {
		require.Nil(t, l.Front().Prev())
		require.Nil(t, l.Back().Next())
	} else {
		require.Nil(t, l.Front())
		require.Nil(t, l.Back())
	}
}

func TestListProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		l, destroy := propRoot[List[int64]](t, seg)
		model := list.New()
		elems := rapid.Int64()
		pick := func(t *rapid.T) (*ListElement[int64], *list.Element) {
			if model.Len() == 0 {
				t.Skip("empty")
			}
			return nthElem(l, model, rapid.IntRange(0, model.Len()-1).Draw(t, "i"))
		}
		t.Repeat(map[string]func(*rapid.T){
			"PushBack": func(t *rapid.T) {
				x := elems.Draw(t, "x")
				e, err := l.PushBack(x)
				require.NoError(t, err)
				assert.Equal(t, x, *e.Value())
				assert.Equal(t, l.Back(), e)
				model.PushBack(x)
			},
			"PushFront": func(t *rapid.T) {
				x := elems.Draw(t, "x")
				e, err := l.PushFront(x)
				require.NoError(t, err)
				assert.Equal(t, l.Front(), e)
				model.PushFront(x)
			},
			"InsertAfter": func(t *rapid.T) {
				mark, m := pick(t)
				x := elems.Draw(t, "x")
				e, err := l.InsertAfter(x, mark)
				require.NoError(t, err)
				assert.Equal(t, mark, e.Prev())
				assert.Equal(t, e, mark.Next())
				model.InsertAfter(x, m)
			},
			"InsertBefore": func(t *rapid.T) {
				mark, m := pick(t)
				x := elems.Draw(t, "x")
				e, err := l.InsertBefore(x, mark)
				require.NoError(t, err)
				assert.Equal(t, mark, e.Next())
				assert.Equal(t, e, mark.Prev())
				model.InsertBefore(x, m)
			},
			"Remove": func(t *rapid.T) {
				e, m := pick(t)
				require.NoError(t, l.Remove(e))
				model.Remove(m)
			},
			"SetValue": func(t *rapid.T) {
				e, m := pick(t)
				x := elems.Draw(t, "x")
				*e.Value() = x
				m.Value = x
			},
			"": func(t *rapid.T) {
				equalList(t, l, model)
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}

// Vector[String] against []string: Strings are appended or inserted
// empty (a zero String owns nothing, so copying it in is safe) and then
// set in place.
func TestVectorOfStringProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		v, destroy := propRoot[Vector[String]](t, seg)
		var model []string
		fill := func(t *rapid.T, from, to int) {
			for i := from; i < to; i++ {
				s := strGen().Draw(t, "s")
				require.NoError(t, v.At(i).Set(s))
				model[i] = s
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"Append": func(t *rapid.T) {
				k := rapid.IntRange(1, 5).Draw(t, "k")
				require.NoError(t, v.Append(make([]String, k)...))
				model = append(model, make([]string, k)...)
				fill(t, len(model)-k, len(model))
			},
			"Insert": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				k := rapid.IntRange(0, 12).Draw(t, "k")
				require.NoError(t, v.Insert(i, make([]String, k)...))
				model = slices.Insert(model, i, make([]string, k)...)
				fill(t, i, i+k)
			},
			"Set": func(t *rapid.T) {
				if len(model) == 0 {
					t.Skip("empty")
				}
				i := rapid.IntRange(0, len(model)-1).Draw(t, "i")
				fill(t, i, i+1)
			},
			"Delete": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				j := rapid.IntRange(i, len(model)).Draw(t, "j")
				require.NoError(t, v.Delete(i, j))
				model = slices.Delete(model, i, j)
			},
			"Truncate": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)).Draw(t, "n")
				require.NoError(t, v.Truncate(n))
				model = model[:n]
			},
			"Resize": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)+10).Draw(t, "n")
				require.NoError(t, v.Resize(n))
				if n <= len(model) {
					model = model[:n]
				} else {
					model = append(model, make([]string, n-len(model))...)
				}
			},
			"Reserve": func(t *rapid.T) {
				require.NoError(t, v.Reserve(rapid.IntRange(0, v.Cap()+20).Draw(t, "n")))
			},
			"Clear": func(t *rapid.T) {
				require.NoError(t, v.Clear())
				model = model[:0]
			},
			"": func(t *rapid.T) {
				require.Equal(t, len(model), v.Len())
				for i, p := range v.All() {
					require.Equal(t, model[i], p.String(), "element %d", i)
				}
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}

// List[Vector[int64]] against a container/list of *[]int64.
func TestListOfVectorProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		l, destroy := propRoot[List[Vector[int64]]](t, seg)
		model := list.New()
		pick := func(t *rapid.T) (*ListElement[Vector[int64]], *[]int64, *list.Element) {
			if model.Len() == 0 {
				t.Skip("empty")
			}
			e, m := nthElem(l, model, rapid.IntRange(0, model.Len()-1).Draw(t, "i"))
			return e, m.Value.(*[]int64), m
		}
		xs := rapid.SliceOfN(rapid.Int64(), 0, 40)
		t.Repeat(map[string]func(*rapid.T){
			"PushBack": func(t *rapid.T) {
				_, err := l.PushBack(Vector[int64]{})
				require.NoError(t, err)
				model.PushBack(&[]int64{})
			},
			"PushFront": func(t *rapid.T) {
				_, err := l.PushFront(Vector[int64]{})
				require.NoError(t, err)
				model.PushFront(&[]int64{})
			},
			"InsertAfter": func(t *rapid.T) {
				e, _, m := pick(t)
				_, err := l.InsertAfter(Vector[int64]{}, e)
				require.NoError(t, err)
				model.InsertAfter(&[]int64{}, m)
			},
			"InsertBefore": func(t *rapid.T) {
				e, _, m := pick(t)
				_, err := l.InsertBefore(Vector[int64]{}, e)
				require.NoError(t, err)
				model.InsertBefore(&[]int64{}, m)
			},
			"Remove": func(t *rapid.T) {
				e, _, m := pick(t)
				require.NoError(t, l.Remove(e))
				model.Remove(m)
			},
			"AppendIn": func(t *rapid.T) {
				e, ms, _ := pick(t)
				add := xs.Draw(t, "xs")
				require.NoError(t, e.Value().Append(add...))
				*ms = append(*ms, add...)
			},
			"InsertIn": func(t *rapid.T) {
				e, ms, _ := pick(t)
				i := rapid.IntRange(0, len(*ms)).Draw(t, "i")
				add := xs.Draw(t, "xs")
				require.NoError(t, e.Value().Insert(i, add...))
				*ms = slices.Insert(*ms, i, add...)
			},
			"DeleteIn": func(t *rapid.T) {
				e, ms, _ := pick(t)
				i := rapid.IntRange(0, len(*ms)).Draw(t, "i")
				j := rapid.IntRange(i, len(*ms)).Draw(t, "j")
				require.NoError(t, e.Value().Delete(i, j))
				*ms = slices.Delete(*ms, i, j)
			},
			"TruncateIn": func(t *rapid.T) {
				e, ms, _ := pick(t)
				n := rapid.IntRange(0, len(*ms)).Draw(t, "n")
				require.NoError(t, e.Value().Truncate(n))
				*ms = (*ms)[:n]
			},
			"": func(t *rapid.T) {
				require.Equal(t, model.Len(), l.Len())
				m := model.Front()
				for e := l.Front(); e != nil; e = e.Next() {
					require.NotNil(t, m, "the list is longer than its model")
					equalVec(t, e.Value(), *m.Value.(*[]int64))
					m = m.Next()
				}
				require.Nil(t, m, "the list is shorter than its model")
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}

// recordModel is the Go model of a record.
type recordModel struct {
	ID   int64
	Name string
	Tags []string
}

// Vector[record] (a struct holding a String and a Vector[String])
// against []recordModel.
func TestVectorOfRecordProperties(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		seg := propSeg(t, dir)
		free0 := seg.FreeMemory()
		v, destroy := propRoot[Vector[record]](t, seg)
		var model []recordModel
		ids := rapid.Int64()
		fresh := func(t *rapid.T, k int) ([]record, []recordModel) {
			rs, ms := make([]record, k), make([]recordModel, k)
			for i := range k {
				id := ids.Draw(t, "id")
				rs[i].ID, ms[i].ID = id, id
			}
			return rs, ms
		}
		pick := func(t *rapid.T) (*record, *recordModel) {
			if len(model) == 0 {
				t.Skip("empty")
			}
			i := rapid.IntRange(0, len(model)-1).Draw(t, "i")
			return v.At(i), &model[i]
		}
		t.Repeat(map[string]func(*rapid.T){
			"Append": func(t *rapid.T) {
				rs, ms := fresh(t, rapid.IntRange(0, 4).Draw(t, "k"))
				require.NoError(t, v.Append(rs...))
				model = append(model, ms...)
			},
			"Insert": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				rs, ms := fresh(t, rapid.IntRange(0, 12).Draw(t, "k"))
				require.NoError(t, v.Insert(i, rs...))
				model = slices.Insert(model, i, ms...)
			},
			"SetName": func(t *rapid.T) {
				r, m := pick(t)
				s := strGen().Draw(t, "name")
				require.NoError(t, r.Name.Set(s))
				m.Name = s
			},
			"AddTag": func(t *rapid.T) {
				r, m := pick(t)
				s := strGen().Draw(t, "tag")
				require.NoError(t, r.Tags.Append(String{}))
				require.NoError(t, r.Tags.At(r.Tags.Len()-1).Set(s))
				m.Tags = append(m.Tags, s)
			},
			"SetTag": func(t *rapid.T) {
				r, m := pick(t)
				if len(m.Tags) == 0 {
					t.Skip("no tags")
				}
				j := rapid.IntRange(0, len(m.Tags)-1).Draw(t, "j")
				s := strGen().Draw(t, "tag")
				require.NoError(t, r.Tags.At(j).Set(s))
				m.Tags[j] = s
			},
			"DeleteTags": func(t *rapid.T) {
				r, m := pick(t)
				i := rapid.IntRange(0, len(m.Tags)).Draw(t, "i")
				j := rapid.IntRange(i, len(m.Tags)).Draw(t, "j")
				require.NoError(t, r.Tags.Delete(i, j))
				m.Tags = slices.Delete(m.Tags, i, j)
			},
			"Delete": func(t *rapid.T) {
				i := rapid.IntRange(0, len(model)).Draw(t, "i")
				j := rapid.IntRange(i, len(model)).Draw(t, "j")
				require.NoError(t, v.Delete(i, j))
				model = slices.Delete(model, i, j)
			},
			"Truncate": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)).Draw(t, "n")
				require.NoError(t, v.Truncate(n))
				model = model[:n]
			},
			"Resize": func(t *rapid.T) {
				n := rapid.IntRange(0, len(model)+6).Draw(t, "n")
				require.NoError(t, v.Resize(n))
				if n <= len(model) {
					model = model[:n]
				} else {
					model = append(model, make([]recordModel, n-len(model))...)
				}
			},
			"Reserve": func(t *rapid.T) {
				require.NoError(t, v.Reserve(rapid.IntRange(0, v.Cap()+20).Draw(t, "n")))
			},
			"Clear": func(t *rapid.T) {
				require.NoError(t, v.Clear())
				model = model[:0]
			},
			"": func(t *rapid.T) {
				require.Equal(t, len(model), v.Len())
				for i, r := range v.All() {
					m := model[i]
					require.Equal(t, m.ID, r.ID, "record %d", i)
					require.Equal(t, m.Name, r.Name.String(), "record %d", i)
					require.Equal(t, len(m.Tags), r.Tags.Len(), "record %d", i)
					for j, tag := range r.Tags.All() {
						require.Equal(t, m.Tags[j], tag.String(), "record %d tag %d", i, j)
					}
				}
				require.NoError(t, seg.CheckSanity())
			},
		})
		propEnd(t, seg, free0, destroy)
	})
}
