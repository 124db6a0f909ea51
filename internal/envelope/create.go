package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"unsafe"

	"github.com/mapstore/mapstore/internal/region"
	"github.com/mapstore/mapstore/recovery"
)

// create builds a new segment in r, a new backing that no other process
// can see yet, and publishes it: the header, the layers above (Init), this
// open's seat, all in place before the segment appears at its name. If
// another process published one first, it is ErrExists.
func (e *Envelope) create(p Params, rep *recovery.Report) error {
	r := e.region
	h := Header{
		Version:   FormatVersion,
		ByteOrder: NativeByteOrder(),
		PtrWidth:  uint8(unsafe.Sizeof(uintptr(0))),
		PageSize:  PageSize,
		Flags:     p.Flags,
		Size:      uint64(p.Size),
		State:     recovery.StateAttached,
		BootID:    bootID(),
		Opens:     1,
		DataStart: EnvelopeSize,
	}
	if _, err := rand.Read(h.UUID[:]); err != nil {
		return fmt.Errorf("%s: create: %w", r.Name(), err)
	}
	if err := r.Resize(p.Size); err != nil {
		return err
	}
	mem, maxLen, err := mapNew(r, p.MaxSize, p.Size)
	if err != nil {
		return err
	}
	if maxLen < p.MaxSize {
		rep.Addf("reserved %d bytes of address space for the maximum size, not the %d asked for: the process cannot reserve more", maxLen, p.MaxSize)
	}
	e.mem, e.maxLen, e.uuid, e.flags = mem, maxLen, h.UUID, h.Flags
	h.MaxSize = uint64(maxLen)
	e.writeHeader(&h)
	e.inUse.Store(true) // created attached
	e.mem.setLiveSize(h.Size)
	if p.Init != nil {
		if err := p.Init(e); err != nil {
			return fmt.Errorf("%s: create: %w", r.Name(), err)
		}
	}
	if err := e.claimSeat(p, rep); err != nil {
		return err
	}
	if e.hdr, err = e.current(); err != nil {
		return err
	}
	return r.Publish()
}

// mapNew maps a new segment: want bytes of address space, or where the
// process cannot reserve that much (ENOMEM: a ulimit -v), the most it can
// in halves down to size.
func mapNew(r *region.Region, want, size int64) ([]byte, int64, error) {
	for n := want; ; {
		mem, err := r.Map(n, region.MapShared)
		if err == nil || !errors.Is(err, region.ErrNoSpace) || n == size {
			return mem, n, err
		}
		n = max(size, (n/2)&^(PageSize-1))
	}
}
