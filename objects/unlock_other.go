//go:build !amd64 || race

package objects

// plainUnlock is false where the hardware may make a plain store visible
// before earlier ones (arm64 and the other weakly ordered targets): the
// critical section's stores could leak past the release. Unlock is a
// compare-and-swap there, and under the race detector (see
// unlock_amd64.go). See Mutex.
const plainUnlock = false
