package journal

// StoreOrdered stores v at p after every store before it, as seen by a
// process that looks after this one was killed. On amd64 a plain
// store is enough (see Journal); it is a function so that the other
// architectures can put a barrier here.
func StoreOrdered(p *uint64, v uint64) { *p = v }
