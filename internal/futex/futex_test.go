package futex

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The Mutex's plain-store Unlock needs membarrier(2)'s global expedited
// barrier: registering for it and running it work on these machines.
func TestFence(t *testing.T) {
	require.NoError(t, RegisterFence())
	require.NoError(t, RegisterFence(), "registering twice is allowed")
	require.NoError(t, Fence())
}

func TestWaitTimesOutAndSeesAChangedWord(t *testing.T) {
	var w uint32 = 7
	start := time.Now()
	require.False(t, Wait(&w, 7, 5*time.Millisecond), "a word that stays the same: a timeout")
	require.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)
	require.True(t, Wait(&w, 8, time.Second), "a word that differs: no sleep")
	require.False(t, Wait(&w, 7, 0), "no time: not at all")
}
