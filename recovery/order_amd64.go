package recovery

// storeOrdered stores v at p after every store before it. On amd64 a plain
// store is enough (see Journal); it is a function so that the other
// architectures can put a barrier here.
func storeOrdered(p *uint64, v uint64) { *p = v }
