package envelope

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unsafe"

	"github.com/mapstore/mapstore/recovery"
)

// Magic is the first eight bytes of every segment.
const Magic = "MAPSTORE"

// FormatVersion is the envelope format this build writes and reads.
// Version 2 added the occupied-seat mask; version 3 fits the envelope in
// one page (both header copies, 16-byte seats). Older segments are
// ErrVersion.
const FormatVersion = 3

// Envelope geometry.
const (
	PageSize     = 4096     // envelope unit; the system page size must match
	HeaderLen    = 512      // bytes in one header copy
	HeaderOffA   = 0        // copy A
	HeaderOffB   = 512      // copy B (another 512-byte sector)
	liveSizeOff  = 1024     // atomic uint64: current size
	attachSeqOff = 1032     // atomic uint64: attach counter
	seatMaskOff  = 1040     // 2 atomic uint64: occupied-seat mask
	seatsOff     = 1088     // attached-process table
	SeatLen      = 16       // bytes per seat
	MaxSeats     = 127      // attached opens at one time
	EnvelopeSize = PageSize // bytes before the first usable byte
	NumRoots     = 32       // root offsets the layers above may register
)

// Header flags.
const (
	// FlagFixedSize: allocations never grow the segment.
	FlagFixedSize uint32 = 1 << 0
)

// Header is one copy of the segment header. On disk (little-endian):
//
//	offset  size  field
//	0       8     magic "MAPSTORE"
//	8       4     format version
//	12      1     byte order of the data (1 little-endian, 2 big-endian)
//	13      1     pointer width in bytes
//	14      2     header length (512)
//	16      4     page size
//	20      4     flags
//	24      16    creation UUID
//	40      8     size in bytes
//	48      8     maximum size in bytes (address space each process reserves)
//	56      8     generation (the copy with the highest valid one wins)
//	64      4     state
//	68      4     reserved
//	72      16    boot id of the machine that last wrote it
//	88      8     writable opens over the segment's life
//	96      8     offset of the first usable byte
//	104     256   root offsets (NumRoots × 8)
//	360     148   reserved, zero
//	508     4     CRC32C of bytes 0..507
type Header struct {
	Version    uint32
	ByteOrder  uint8
	PtrWidth   uint8
	PageSize   uint32
	Flags      uint32
	UUID       [16]byte
	Size       uint64
	MaxSize    uint64
	Generation uint64
	State      recovery.State
	BootID     [16]byte
	Opens      uint64
	DataStart  uint64
	Roots      [NumRoots]uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NativeByteOrder is 1 on little-endian machines and 2 on big-endian ones.
func NativeByteOrder() uint8 {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) == 1 {
		return 1
	}
	return 2
}

// Encode writes h into dst[:HeaderLen], with its checksum.
func (h *Header) Encode(dst []byte) {
	b := dst[:HeaderLen]
	clear(b)
	le := binary.LittleEndian
	copy(b[0:8], Magic)
	le.PutUint32(b[8:], h.Version)
	b[12] = h.ByteOrder
	b[13] = h.PtrWidth
	le.PutUint16(b[14:], HeaderLen)
	le.PutUint32(b[16:], h.PageSize)
	le.PutUint32(b[20:], h.Flags)
	copy(b[24:40], h.UUID[:])
	le.PutUint64(b[40:], h.Size)
	le.PutUint64(b[48:], h.MaxSize)
	le.PutUint64(b[56:], h.Generation)
	le.PutUint32(b[64:], uint32(h.State))
	copy(b[72:88], h.BootID[:])
	le.PutUint64(b[88:], h.Opens)
	le.PutUint64(b[96:], h.DataStart)
	for i, r := range h.Roots {
		le.PutUint64(b[104+8*i:], r)
	}
	le.PutUint32(b[508:], crc32.Checksum(b[:508], castagnoli))
}

// DecodeHeader decodes and validates one header copy. A copy that is not
// a mapstore header, or whose checksum or fields are wrong, is recovery.ErrCorrupt;
// a valid copy in another format version or for another machine layout is
// recovery.ErrVersion. DecodeHeader never panics, whatever b holds.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, fmt.Errorf("header: %d bytes, need %d: %w", len(b), HeaderLen, recovery.ErrCorrupt)
	}
	b = b[:HeaderLen]
	le := binary.LittleEndian
	if string(b[0:8]) != Magic {
		return h, fmt.Errorf("header: bad magic %q, not a mapstore segment: %w", b[0:8], recovery.ErrCorrupt)
	}
	h.Version = le.Uint32(b[8:])
	if h.Version != FormatVersion {
		return h, fmt.Errorf("header: format version %d, this build reads %d: %w", h.Version, FormatVersion, recovery.ErrVersion)
	}
	if sum, want := crc32.Checksum(b[:508], castagnoli), le.Uint32(b[508:]); sum != want {
		return h, fmt.Errorf("header: checksum %08x, stored %08x: %w", sum, want, recovery.ErrCorrupt)
	}
	h.ByteOrder = b[12]
	h.PtrWidth = b[13]
	h.PageSize = le.Uint32(b[16:])
	h.Flags = le.Uint32(b[20:])
	copy(h.UUID[:], b[24:40])
	h.Size = le.Uint64(b[40:])
	h.MaxSize = le.Uint64(b[48:])
	h.Generation = le.Uint64(b[56:])
	h.State = recovery.State(le.Uint32(b[64:]))
	copy(h.BootID[:], b[72:88])
	h.Opens = le.Uint64(b[88:])
	h.DataStart = le.Uint64(b[96:])
	for i := range h.Roots {
		h.Roots[i] = le.Uint64(b[104+8*i:])
	}
	if hl := le.Uint16(b[14:]); hl != HeaderLen {
		return h, fmt.Errorf("header: length %d, want %d: %w", hl, HeaderLen, recovery.ErrCorrupt)
	}
	if h.ByteOrder != NativeByteOrder() || h.PtrWidth != uint8(unsafe.Sizeof(uintptr(0))) {
		return h, fmt.Errorf("header: byte order %d and pointer width %d, this machine has %d and %d: %w",
			h.ByteOrder, h.PtrWidth, NativeByteOrder(), unsafe.Sizeof(uintptr(0)), recovery.ErrVersion)
	}
	if h.PageSize != PageSize {
		return h, fmt.Errorf("header: page size %d, want %d: %w", h.PageSize, PageSize, recovery.ErrVersion)
	}
	if err := h.validate(); err != nil {
		return h, err
	}
	return h, nil
}

// validate checks the fields' relations to one another.
func (h *Header) validate() error {
	switch {
	case h.State < recovery.StateCreating || h.State > recovery.StateClosed:
		return fmt.Errorf("header: unknown state %d: %w", h.State, recovery.ErrCorrupt)
	case h.DataStart != EnvelopeSize:
		return fmt.Errorf("header: data offset %d, want %d: %w", h.DataStart, EnvelopeSize, recovery.ErrCorrupt)
	case h.Size < EnvelopeSize || h.Size%PageSize != 0:
		return fmt.Errorf("header: size %d is not a multiple of %d of at least %d: %w", h.Size, PageSize, EnvelopeSize, recovery.ErrCorrupt)
	case h.MaxSize < h.Size || h.MaxSize%PageSize != 0 || h.MaxSize > MaxMaxSize:
		return fmt.Errorf("header: maximum size %d for size %d: %w", h.MaxSize, h.Size, recovery.ErrCorrupt)
	}
	for i, r := range h.Roots {
		if r != 0 && (r < EnvelopeSize || r >= h.MaxSize) {
			return fmt.Errorf("header: root %d at offset %d outside the segment: %w", i, r, recovery.ErrCorrupt)
		}
	}
	return nil
}

// MaxMaxSize is the largest maximum size a segment may have (1 TiB of
// address space per process).
const MaxMaxSize = 1 << 40

// ReadHeaders picks the header to trust from a segment's first page: the
// valid copy with the highest generation. damaged lists copies ("A", "B")
// that failed to decode, with why. When neither copy is valid the error
// is the first copy's (recovery.ErrVersion wins over recovery.ErrCorrupt, so that a segment
// from a newer format is reported as such).
func ReadHeaders(page []byte) (h Header, damaged []string, err error) {
	if len(page) < HeaderOffB+HeaderLen {
		return h, nil, fmt.Errorf("%d bytes, shorter than a header page: %w", len(page), recovery.ErrCorrupt)
	}
	ha, errA := DecodeHeader(page[HeaderOffA:])
	hb, errB := DecodeHeader(page[HeaderOffB:])
	switch {
	case errA == nil && errB == nil:
		if hb.Generation > ha.Generation {
			return hb, nil, nil
		}
		return ha, nil, nil
	case errA == nil:
		return ha, []string{"header copy B: " + errB.Error()}, nil
	case errB == nil:
		return hb, []string{"header copy A: " + errA.Error()}, nil
	}
	if isVersion(errB) && !isVersion(errA) {
		errA = errB
	}
	return h, nil, fmt.Errorf("both header copies invalid: %w (copy B: %v)", errA, errB)
}
