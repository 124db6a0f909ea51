package objects

import (
	"container/list"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Fuzz targets: the input is a program of operations on one container
// and its Go model; after each the two must be equal and the segment
// sane, and after the container is deleted every byte must be back. One
// segment serves every input of a fuzzing process.

// fuzzOps decodes operations and their arguments from the fuzz input;
// past its end every read is 0.
type fuzzOps struct {
	b     []byte
	steps int
}

// maxFuzzOps bounds the operations run for one input.
const maxFuzzOps = 300

func (o *fuzzOps) next() (op byte, ok bool) {
	if len(o.b) == 0 || o.steps == maxFuzzOps {
		return 0, false
	}
	o.steps++
	return o.byte(), true
}

func (o *fuzzOps) byte() byte {
	if len(o.b) == 0 {
		return 0
	}
	c := o.b[0]
	o.b = o.b[1:]
	return c
}

// upTo is a number in [0, n].
func (o *fuzzOps) upTo(n int) int {
	if n <= 0 {
		return 0
	}
	v := int(o.byte())
	if n > 255 {
		v = v<<8 | int(o.byte())
	}
	return v % (n + 1)
}

// value is an element value: the next two bytes, tagged with the step.
func (o *fuzzOps) value() int64 {
	return int64(o.steps)<<16 | int64(o.byte())<<8 | int64(o.byte())
}

// fuzzSeg opens the segment the inputs of one fuzzing process share, and
// returns it with its free memory before any input.
func fuzzSeg(f *testing.F) (*mapped.Segment, int64) {
	seg, err := mapped.Open(file.Path(filepath.Join(f.TempDir(), "fuzz.seg")), mapped.CreateOnly, mapped.WithSize(8<<20))
	require.NoError(f, err)
	f.Cleanup(func() { _ = seg.Close() })
	return seg, seg.FreeMemory()
}

// fuzzEnd deletes the input's container and checks that every byte of it
// came back.
func fuzzEnd[C any](t *testing.T, seg *mapped.Segment, free0 int64, c *C) {
	require.NoError(t, Delete(seg, c))
	require.NoError(t, seg.CheckSanity())
	require.True(t, seg.AllMemoryDeallocated())
	require.Equal(t, free0, seg.FreeMemory())
}

func FuzzVector(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 1, 2, 0, 3, 4, 1, 40})
	f.Add([]byte{1, 30, 2, 5, 35, 3, 2, 9, 4, 3, 5, 200, 6, 250, 7, 2, 20, 1, 9})
	f.Add([]byte{6, 100, 1, 20, 2, 10, 33, 2, 0, 32, 8, 3, 4, 3, 0, 255, 7, 5, 60})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := New[Vector[int64]](seg)
		require.NoError(t, err)
		var model []int64
		ops := &fuzzOps{b: data}
		for op, ok := ops.next(); ok; op, ok = ops.next() {
			switch op % 10 {
			case 0:
				x := ops.value()
				require.NoError(t, v.Append(x))
				model = append(model, x)
			case 1:
				xs := make([]int64, ops.upTo(70))
				for i := range xs {
					xs[i] = ops.value()
				}
				require.NoError(t, v.Append(xs...))
				model = append(model, xs...)
			case 2:
				i := ops.upTo(len(model))
				xs := make([]int64, ops.upTo(50))
				for k := range xs {
					xs[k] = ops.value()
				}
				require.NoError(t, v.Insert(i, xs...))
				model = slices.Insert(model, i, xs...)
			case 3:
				i := ops.upTo(len(model))
				j := i + ops.upTo(len(model)-i)
				require.NoError(t, v.Delete(i, j))
				model = slices.Delete(model, i, j)
			case 4:
				n := ops.upTo(len(model))
				require.NoError(t, v.Truncate(n))
				model = model[:n]
			case 5:
				n := ops.upTo(len(model) + 100)
				require.NoError(t, v.Resize(n))
				if n <= len(model) {
					model = model[:n]
				} else {
					model = append(model, make([]int64, n-len(model))...)
				}
			case 6:
				n := ops.upTo(v.Cap() + 200)
				require.NoError(t, v.Reserve(n))
				require.GreaterOrEqual(t, v.Cap(), n)
			case 7:
				require.NoError(t, v.Clear())
				model = model[:0]
			case 8:
				if len(model) > 0 {
					i, x := ops.upTo(len(model)-1), ops.value()
					*v.At(i) = x
					model[i] = x
				}
			default:
				slices.Sort(v.Slice())
				slices.Sort(model)
			}
			equalVec(t, v, model)
			require.NoError(t, seg.CheckSanity())
		}
		fuzzEnd(t, seg, free0, v)
	})
}

func FuzzString(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 5, 'a', 0, 7, 'b', 0, 8, 'c', 1, 90, 2, 3})
	f.Add([]byte{1, 200, 1, 200, 2, 10, 0, 0, 3, 1, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := New[String](seg)
		require.NoError(t, err)
		model := ""
		ops := &fuzzOps{b: data}
		for op, ok := ops.next(); ok; op, ok = ops.next() {
			var v string
			switch op % 4 {
			case 0: // a value of up to 15 bytes from the input (inline or not)
				n := ops.upTo(15)
				b := make([]byte, n)
				for i := range b {
					b[i] = ops.byte()
				}
				v = string(b)
			case 1: // grow by a pattern
				v = model + strings.Repeat(string(rune('a'+op%26)), ops.upTo(255))
			case 2: // a prefix
				v = model[:ops.upTo(len(model))]
			default: // compare with a neighbour
				other := model + string(rune(ops.byte()))
				if len(model) > 0 && op&0x80 != 0 {
					b := []byte(model)
					b[ops.upTo(len(b)-1)] ^= ops.byte() | 1
					other = string(b)
				}
				require.Equal(t, model == other, s.Equal(other))
				require.Equal(t, strings.Compare(model, other), s.Compare(other))
				continue
			}
			require.NoError(t, s.Set(v))
			model = v
			require.Equal(t, model, s.String())
			require.Equal(t, len(model), s.Len())
			require.Equal(t, model, string(s.Bytes()))
			require.True(t, s.Equal(model))
			require.Zero(t, s.Compare(model))
			require.NoError(t, seg.CheckSanity())
		}
		fuzzEnd(t, seg, free0, s)
	})
}

func FuzzList(f *testing.F) {
	seg, free0 := fuzzSeg(f)
	f.Add([]byte{0, 1, 2, 0, 3, 4, 1, 0, 2, 5, 4, 0})
	f.Add([]byte{0, 0, 0, 0, 2, 1, 1, 3, 2, 2, 4, 1, 4, 0, 5, 1, 9, 4, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := New[List[int64]](seg)
		require.NoError(t, err)
		model := list.New()
		ops := &fuzzOps{b: data}
		for op, ok := ops.next(); ok; op, ok = ops.next() {
			switch op := op % 6; {
			case op == 0:
				x := ops.value()
				_, err := l.PushBack(x)
				require.NoError(t, err)
				model.PushBack(x)
			case op == 1:
				x := ops.value()
				_, err := l.PushFront(x)
				require.NoError(t, err)
				model.PushFront(x)
			case model.Len() == 0:
			default:
				e, m := nthElem(l, model, ops.upTo(model.Len()-1))
				switch op {
				case 2:
					x := ops.value()
					_, err := l.InsertAfter(x, e)
					require.NoError(t, err)
					model.InsertAfter(x, m)
				case 3:
					x := ops.value()
					_, err := l.InsertBefore(x, e)
					require.NoError(t, err)
					model.InsertBefore(x, m)
				case 4:
					require.NoError(t, l.Remove(e))
					model.Remove(m)
				default:
					x := ops.value()
					*e.Value() = x
					m.Value = x
				}
			}
			equalList(t, l, model)
			require.NoError(t, seg.CheckSanity())
		}
		fuzzEnd(t, seg, free0, l)
	})
}
