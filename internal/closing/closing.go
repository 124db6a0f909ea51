// Package closing tells the packages above mapped that a segment has
// closed, so that what they remember about it in Go memory (objects keeps
// checked hash-table geometry per map) is dropped at once rather than when
// it is next replaced.
//
// mapped calls Closed once per Segment, after the segment has left the
// registry of open segments (mapped.SegmentAt no longer finds it) and
// before its mapping is retired. Hooks run in the closing goroutine, in
// the order they were added; they must be short and must not call back
// into the segment.
package closing

import "sync"

var (
	mu    sync.Mutex
	hooks []func(seg any)
)

// OnClose adds f to the functions Closed calls. Packages add theirs from
// an init function.
func OnClose(f func(seg any)) {
	mu.Lock()
	defer mu.Unlock()
	hooks = append(hooks, f)
}

// Closed calls every hook with seg, the *mapped.Segment that closed.
func Closed(seg any) {
	mu.Lock()
	hs := hooks
	mu.Unlock()
	for _, f := range hs {
		f(seg)
	}
}
