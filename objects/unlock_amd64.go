package objects

// plainUnlock says Mutex.Unlock may release with a plain store: on amd64
// stores are seen in program order (TSO), so every store of the critical
// section is visible before the one that releases it. See Mutex.
const plainUnlock = true
