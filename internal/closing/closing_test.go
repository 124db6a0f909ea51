package closing

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClosedCallsEveryHookInOrder(t *testing.T) {
	saved := hooks
	defer func() { hooks = saved }()
	hooks = nil
	var got []string
	OnClose(func(seg any) { got = append(got, "a:"+seg.(string)) })
	OnClose(func(seg any) { got = append(got, "b:"+seg.(string)) })
	Closed("s1")
	Closed("s2")
	assert.Equal(t, []string{"a:s1", "b:s1", "a:s2", "b:s2"}, got)
}
