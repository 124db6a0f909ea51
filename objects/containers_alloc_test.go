package objects

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The readers and the in-capacity writers do not allocate.
func TestContainerCallsDoNotAllocate(t *testing.T) {
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Reserve(10_000))
	require.NoError(t, v.Append(1))
	short, err := Construct(seg, "short", String{})
	require.NoError(t, err)
	require.NoError(t, short.Set("inline"))
	long, err := Construct(seg, "long", String{})
	require.NoError(t, err)
	value := strings.Repeat("a long value, longer than any stack buffer for a conversion; ", 3)
	require.NoError(t, long.Set(value))
	l, err := Construct(seg, "l", List[int64]{})
	require.NoError(t, err)
	for i := range 3 {
		_, err := l.PushBack(int64(i))
		require.NoError(t, err)
	}
	other := strings.Repeat("a long value, longer than any stack buffer for a conversion; ", 2) + "b"
	var sink int
	for name, f := range map[string]func(){
		"String.Equal inline":    func() { sink += b2i(short.Equal("inline")) },
		"String.Equal":           func() { sink += b2i(long.Equal(value)) + b2i(long.Equal(other)) },
		"String.Compare inline":  func() { sink += short.Compare("inlinf") },
		"String.Compare":         func() { sink += long.Compare(value) + long.Compare(other) },
		"Vector.At":              func() { sink += int(*v.At(0)) },
		"Vector.Append in place": func() { _ = v.Append(1) },
		"List.Front and Next":    func() { sink += int(*l.Front().Next().Value()) },
	} {
		assert.Zero(t, testing.AllocsPerRun(100, f), name)
	}
	require.Less(t, v.Len(), v.Cap(), "the appends stayed within capacity")
	_ = sink
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
