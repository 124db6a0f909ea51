//go:build !amd64

package journal

import "sync/atomic"

// StoreOrdered stores v at p after every store before it: a release store
// on architectures that may reorder stores.
func StoreOrdered(p *uint64, v uint64) { atomic.StoreUint64(p, v) }
