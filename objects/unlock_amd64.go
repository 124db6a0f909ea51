//go:build amd64 && !race

package objects

// plainUnlock says Mutex.Unlock may release with a plain store: on amd64
// stores are seen in program order (TSO), so every store of the critical
// section is visible before the one that releases it. See Mutex. Not
// under the race detector, which does not see a plain store as a
// release: there Unlock is a compare-and-swap, so that Go memory guarded
// by a segment Mutex (a Queue handle's fields) is seen to be guarded.
const plainUnlock = true
