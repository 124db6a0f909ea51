package mapped

import (
	"fmt"
	"io/fs"

	"github.com/mapstore/mapstore/internal/envelope"
)

// Size limits.
const (
	// MinSize is the smallest segment: the envelope (header pages and the
	// attached-process table) plus room for the allocator's metadata.
	MinSize = 32 << 10
	// DefaultSize is the size a new segment gets without WithSize.
	DefaultSize = 1 << 20
	// DefaultMaxSize is the address space reserved without WithMaxSize: the
	// most a segment may grow to while keeping its base address.
	DefaultMaxSize = 64 << 30
	// MaxMaxSize is the largest WithMaxSize.
	MaxMaxSize = envelope.MaxMaxSize
)

// Option configures Open.
type Option func(*options)

type options struct {
	size, maxSize int64
	sizeSet       bool
	maxSet        bool
	fixed         bool
	perm          fs.FileMode
	noCaches      bool
}

// WithSize sets a new segment's initial size in bytes (rounded up to a
// multiple of 4096); at least MinSize, at most the maximum size. It is
// ignored when an existing segment is opened.
func WithSize(bytes int64) Option {
	return func(o *options) { o.size, o.sizeSet = bytes, true }
}

// WithMaxSize sets the address space every process reserves for a new
// segment: the most it may grow to without its base address moving. The
// default is DefaultMaxSize, or the initial size if that is larger. It is
// recorded in the segment; opening an existing one uses the recorded value.
func WithMaxSize(bytes int64) Option {
	return func(o *options) { o.maxSize, o.maxSet = bytes, true }
}

// WithFixedSize makes a new segment's allocations fail with ErrNoSpace
// instead of growing it, as Boost.Interprocess segments do. Grow still
// grows it explicitly, up to the maximum size (which defaults to the
// initial size under this option).
func WithFixedSize() Option {
	return func(o *options) { o.fixed = true }
}

// WithPerm sets the permission bits of a new backing (default 0o600;
// 0o666 lets every user share it, subject to the umask). Only read and
// write bits are allowed: anything else (execute, setuid, setgid, sticky,
// a file type) is ErrInvalidOption.
func WithPerm(perm fs.FileMode) Option {
	return func(o *options) { o.perm = perm }
}

// withoutCaches opens without per-process block caches (cache.go): every
// allocation takes the segment lock. For tests that compare the two.
func withoutCaches() Option {
	return func(o *options) { o.noCaches = true }
}

func roundPage(n int64) int64 {
	const p = envelope.PageSize
	if r := n % p; r != 0 {
		return n + p - r
	}
	return n
}

func buildOptions(name string, opts []Option) (options, error) {
	o := options{size: DefaultSize, perm: 0o600}
	for _, f := range opts {
		f(&o)
	}
	if o.perm&^0o666 != 0 {
		return o, fmt.Errorf("mapstore: open %s: WithPerm(%v): only read and write bits (0o666) may be set: %w", name, o.perm, ErrInvalidOption)
	}
	if o.size < MinSize || o.size > MaxMaxSize {
		return o, fmt.Errorf("mapstore: open %s: WithSize(%d): %w: want %d to %d bytes", name, o.size, ErrInvalidSize, MinSize, int64(MaxMaxSize))
	}
	o.size = roundPage(o.size)
	switch {
	case o.maxSet:
		if o.maxSize < o.size || o.maxSize > MaxMaxSize {
			return o, fmt.Errorf("mapstore: open %s: WithMaxSize(%d) with size %d: %w: want %d to %d bytes", name, o.maxSize, o.size, ErrInvalidSize, o.size, int64(MaxMaxSize))
		}
		o.maxSize = roundPage(o.maxSize)
	case o.fixed:
		o.maxSize = o.size
	default:
		o.maxSize = max(DefaultMaxSize, o.size)
	}
	return o, nil
}
