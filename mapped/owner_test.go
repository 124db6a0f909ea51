package mapped

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
)

// OwnerID names an open (seat and attach), bit 7 clear; OwnerAlive tells a
// live open from one that closed, and from a later open in the same seat.
func TestOwnerIDAndAlive(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		a := mustOpen(t, b, CreateOnly, WithSize(1<<20))
		other, err := Open(b, OpenOnly)
		require.NoError(t, err)
		ida, idb := a.OwnerID(), other.OwnerID()
		assert.NotZero(t, ida)
		assert.NotEqual(t, ida, idb)
		assert.Zero(t, ida&0x80, "bit 7 is free for the lock's own use")
		assert.Zero(t, idb&0x80)
		assert.True(t, a.OwnerAlive(ida))
		assert.True(t, a.OwnerAlive(idb), "another open, attached")
		require.NoError(t, other.Close())
		assert.False(t, a.OwnerAlive(idb), "closed: gone")
		again, err := Open(b, OpenOnly)
		require.NoError(t, err)
		defer again.Close()
		assert.Equal(t, idb&0x7f, again.OwnerID()&0x7f, "the seat is reused")
		assert.False(t, a.OwnerAlive(idb), "a later open in the same seat is not the one that closed")
		assert.True(t, a.OwnerAlive(again.OwnerID()))
		assert.False(t, a.OwnerAlive(0))

		ro, err := Open(b, OpenReadOnly)
		require.NoError(t, err)
		defer ro.Close()
		assert.Zero(t, ro.OwnerID(), "a read-only open holds nothing")
	})
}
