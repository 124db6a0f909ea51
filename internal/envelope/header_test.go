package envelope

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/recovery"
)

func validHeader() Header {
	h := Header{
		Version: FormatVersion, ByteOrder: NativeByteOrder(), PtrWidth: uint8(unsafe.Sizeof(uintptr(0))),
		PageSize: PageSize, Size: 1 << 20, MaxSize: 1 << 30, Generation: 7, State: recovery.StateAttached,
		DataStart: EnvelopeSize, Opens: 3, Flags: FlagFixedSize,
	}
	h.UUID[0], h.BootID[15] = 0xab, 0xcd
	h.Roots[0], h.Roots[NumRoots-1] = EnvelopeSize, 1<<20-8
	return h
}

func TestHeaderRoundTrip(t *testing.T) {
	h := validHeader()
	buf := make([]byte, HeaderLen)
	h.Encode(buf)
	got, err := DecodeHeader(buf)
	require.NoError(t, err)
	assert.Equal(t, h, got)
}

func TestHeaderEveryBitFlipIsDetected(t *testing.T) {
	h := validHeader()
	buf := make([]byte, HeaderLen)
	h.Encode(buf)
	for i := 0; i < HeaderLen*8; i++ {
		b := append([]byte(nil), buf...)
		b[i/8] ^= 1 << (i % 8)
		_, err := DecodeHeader(b)
		require.Error(t, err, "bit %d", i)
		if !errors.Is(err, recovery.ErrCorrupt) && !errors.Is(err, recovery.ErrVersion) {
			t.Fatalf("bit %d: %v is neither recovery.ErrCorrupt nor recovery.ErrVersion", i, err)
		}
	}
}

func reencode(b []byte) {
	binary.LittleEndian.PutUint32(b[508:], crc32.Checksum(b[:508], castagnoli))
}

func TestHeaderRejectsBadFields(t *testing.T) {
	cases := []struct {
		name string
		mod  func(b []byte)
		want error
	}{
		{"magic", func(b []byte) { copy(b, "PNG\r\n\x1a\n\x00") }, recovery.ErrCorrupt},
		{"newer version", func(b []byte) { binary.LittleEndian.PutUint32(b[8:], FormatVersion+1) }, recovery.ErrVersion},
		{"byte order", func(b []byte) { b[12] = 3 - NativeByteOrder() }, recovery.ErrVersion},
		{"pointer width", func(b []byte) { b[13] = 4 }, recovery.ErrVersion},
		{"page size", func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 65536) }, recovery.ErrVersion},
		{"header length", func(b []byte) { binary.LittleEndian.PutUint16(b[14:], 100) }, recovery.ErrCorrupt},
		{"state", func(b []byte) { binary.LittleEndian.PutUint32(b[64:], 9) }, recovery.ErrCorrupt},
		{"size below envelope", func(b []byte) { binary.LittleEndian.PutUint64(b[40:], EnvelopeSize-PageSize) }, recovery.ErrCorrupt},
		{"size not page multiple", func(b []byte) { binary.LittleEndian.PutUint64(b[40:], 1<<20+1) }, recovery.ErrCorrupt},
		{"max below size", func(b []byte) { binary.LittleEndian.PutUint64(b[48:], 1<<19) }, recovery.ErrCorrupt},
		{"max too large", func(b []byte) { binary.LittleEndian.PutUint64(b[48:], 1<<50) }, recovery.ErrCorrupt},
		{"data start", func(b []byte) { binary.LittleEndian.PutUint64(b[96:], 0) }, recovery.ErrCorrupt},
		{"root outside", func(b []byte) { binary.LittleEndian.PutUint64(b[104:], 1<<31) }, recovery.ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := validHeader()
			buf := make([]byte, HeaderLen)
			h.Encode(buf)
			c.mod(buf)
			reencode(buf)
			_, err := DecodeHeader(buf)
			require.ErrorIs(t, err, c.want)
		})
	}
	_, err := DecodeHeader(make([]byte, 10))
	require.ErrorIs(t, err, recovery.ErrCorrupt)
}

func TestReadHeadersPicksNewestValidCopy(t *testing.T) {
	page := make([]byte, PageSize)
	h := validHeader()
	h.Generation = 4
	h.Encode(page[HeaderOffA:])
	h.Generation, h.Size = 5, 2<<20
	h.Encode(page[HeaderOffB:])

	got, damaged, err := ReadHeaders(page)
	require.NoError(t, err)
	assert.Empty(t, damaged)
	assert.Equal(t, uint64(5), got.Generation)
	assert.Equal(t, uint64(2<<20), got.Size)

	// A torn write of the newest copy leaves the previous one.
	page[HeaderOffB+45] ^= 0xff
	got, damaged, err = ReadHeaders(page)
	require.NoError(t, err)
	assert.Equal(t, uint64(4), got.Generation)
	require.Len(t, damaged, 1)
	assert.Contains(t, damaged[0], "copy B")

	page[HeaderOffA+45] ^= 0xff
	_, _, err = ReadHeaders(page)
	require.ErrorIs(t, err, recovery.ErrCorrupt)

	_, _, err = ReadHeaders(page[:100])
	require.ErrorIs(t, err, recovery.ErrCorrupt)
}

func TestReadHeadersReportsNewerVersion(t *testing.T) {
	page := make([]byte, PageSize)
	h := validHeader()
	h.Encode(page[HeaderOffA:])
	h.Encode(page[HeaderOffB:])
	for _, off := range []int{HeaderOffA, HeaderOffB} {
		binary.LittleEndian.PutUint32(page[off+8:], FormatVersion+1)
		reencode(page[off : off+HeaderLen])
	}
	_, _, err := ReadHeaders(page)
	require.ErrorIs(t, err, recovery.ErrVersion)
}

func FuzzDecodeHeader(f *testing.F) {
	h := validHeader()
	buf := make([]byte, HeaderLen)
	h.Encode(buf)
	f.Add(buf, false)
	f.Add(buf[:100], false)
	f.Add(make([]byte, HeaderLen), true)
	f.Fuzz(func(t *testing.T, b []byte, fixSum bool) {
		if fixSum && len(b) >= HeaderLen {
			b = append([]byte(nil), b[:HeaderLen]...)
			copy(b, Magic)
			reencode(b)
		}
		got, err := DecodeHeader(b)
		if err != nil {
			if !errors.Is(err, recovery.ErrCorrupt) && !errors.Is(err, recovery.ErrVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever decodes must be self-consistent and re-encode the same.
		require.NoError(t, got.validate())
		out := make([]byte, HeaderLen)
		got.Encode(out)
		again, err := DecodeHeader(out)
		require.NoError(t, err)
		assert.Equal(t, got, again)
	})
}
