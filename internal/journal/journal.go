// Package journal is the undo journal of a segment's crash-atomic
// operations: the old value of every word an operation changes, recorded
// before the change, and the replay that puts them back after a crash.
package journal

import (
	"fmt"
	"unsafe"

	"github.com/mapstore/mapstore/recovery"
)

// Journal is an undo journal at a fixed place in a segment. An operation
// that changes more than one word of the segment records each word's old
// value before changing it; if the operation is cut off (its process is
// killed at any instruction), Replay puts every recorded word back and the
// segment is as it was before the operation began.
//
// A journal belongs to the lock that guards the operations using it, not
// to a process: whoever holds the lock owns the journal, and whoever takes
// the lock over from a dead owner replays it first.
//
// Layout (little-endian words, HeaderLen + n*EntryLen bytes):
//
//	offset  size  what
//	0       8     active: 0 idle, else the operation in flight: its code
//	              (bits 0-15) and its sequence number (bits 16-63)
//	8       8     entries written by the operation in flight (the owner's
//	              count, bits 0-31; a replay scans the entries instead) and
//	              the low 23 bits of its sequence number (bits 32-54), so
//	              that one load gives Set64 both
//	16      8     the sequence number of the last operation begun, with
//	              bit 63 set once it ended
//	24      8     zero
//	32      16*n  entries: word 0 = valid bit 63 | the low 23 bits of the
//	              operation's sequence number << 40 | offset of the
//	              changed word; word 1 = its old value
//
// An operation is in flight only if the active word names the last one
// begun and that one has not ended, and an entry belongs to it only if it
// is valid and carries its sequence number: entries an earlier operation
// left behind never do, so a replay (even of a damaged active word)
// cannot undo what an operation that finished did. Each entry also clears the
// word 0 of the next one, so that a replay stops there even when the
// sequence numbers have wrapped (every 2^23 operations).
//
// Ordering. Each record is written before the change it covers, and the
// words that publish and retire records (the entry's word 0, the active
// word) with StoreOrdered, which the compiler can neither drop nor move.
// That is enough for a process crash: x86 makes stores visible in program
// order (TSO), and the memory of a killed process stays in the page cache,
// so what survives is a prefix of its stores. On other architectures
// StoreOrdered is a release store (see order_other.go).
//
// Power loss is a different matter: dirty pages reach the disk in any
// order, so a journal cannot help there; Flush is the durability point.
type Journal struct {
	base unsafe.Pointer // segment base
	at   uintptr        // offset of the journal
	hdr  unsafe.Pointer // base + at
	max  int            // capacity in entries
}

// Journal geometry.
const (
	HeaderLen = 32
	EntryLen  = 16

	entryValid = uint64(1) << 63
	seqShift   = 40                 // an entry's sequence bits
	seqMask    = 1<<23 - 1          // of the sequence number, in an entry
	offMask    = 1<<seqShift - 1    // an entry's offset bits
	opMask     = 0xffff             // the active word's operation code
	lastMask   = 1<<48 - 1          // sequence numbers
	lastEnded  = uint64(1) << 63    // the last operation begun has ended
	activeOff  = 0                  // header words
	countOff   = 8                  //
	lastOff    = 16                 //
	entriesOff = uintptr(HeaderLen) //
)

// At is the journal of size bytes at offset at of the mapping that
// starts at base.
func At(base unsafe.Pointer, at uintptr, size int) Journal {
	return Journal{base: base, at: at, hdr: unsafe.Add(base, at), max: (size-HeaderLen)/EntryLen - 1}
}

func (j *Journal) word(off uintptr) *uint64 { return (*uint64)(unsafe.Add(j.hdr, off)) }

func (j *Journal) entry(i uintptr) uintptr { return entriesOff + i*EntryLen }

// Begin starts an operation with the given code (1 to 65535).
func (j *Journal) Begin(op uint64) {
	seq := (*j.word(lastOff)&lastMask + 1) & lastMask
	if seq == 0 {
		seq = 1
	}
	*j.word(lastOff) = seq
	*j.word(j.entry(0)) = 0
	*j.word(countOff) = (seq & seqMask) << 32
	StoreOrdered(j.word(activeOff), op&opMask|seq<<16)
}

// Set64 records the word at off and then sets it to v.
func (j *Journal) Set64(off uintptr, v uint64) {
	cnt := j.word(countOff)
	c := *cnt
	n := c & (1<<32 - 1)
	if n >= uint64(j.max) {
		journalFull(j.max)
	}
	p := (*uint64)(unsafe.Add(j.base, off))
	e := j.entry(uintptr(n))
	*j.word(e + EntryLen) = 0 // the next entry ends a replay
	*j.word(e + 8) = *p
	StoreOrdered(j.word(e), entryValid|c>>32<<seqShift|uint64(off))
	*cnt = c + 1
	*p = v
}

// Room is how many more words the operation in flight may record.
func (j *Journal) Room() int { return j.max - int(*j.word(countOff)&(1<<32-1)) }

// Record records the current value of the word at off, which the caller
// is about to change.
func (j *Journal) Record(off uintptr) { j.Set64(off, *(*uint64)(unsafe.Add(j.base, off))) }

func journalFull(max int) {
	panic(fmt.Sprintf("mapstore: undo journal full (%d entries): an operation changed too many words", max))
}

// End finishes the operation: its changes stand.
func (j *Journal) End() {
	StoreOrdered(j.word(activeOff), 0)
	*j.word(lastOff) |= lastEnded
}

// Entries is how many words the operation in flight has recorded.
func (j *Journal) Entries() int { return int(*j.word(countOff) & (1<<32 - 1)) }

// Pending reports the operation a dead owner left in flight (0 if none)
// and how many words it recorded. An active word that does not name the
// last operation begun is damage (recovery.ErrCorrupt).
func (j *Journal) Pending() (op uint64, words int, err error) {
	active := *j.word(activeOff)
	if active == 0 {
		return 0, 0, nil
	}
	op, seq := active&opMask, active>>16
	if op == 0 || seq != *j.word(lastOff) {
		return 0, 0, fmt.Errorf("undo journal at offset %d: active word %#x names no operation in flight (the last one begun is %d): %w", j.at, active, *j.word(lastOff), recovery.ErrCorrupt)
	}
	for i := 0; i < j.max; i++ {
		w := *j.word(j.entry(uintptr(i)))
		if w&entryValid == 0 || w>>seqShift&seqMask != seq&seqMask {
			return op, i, nil
		}
	}
	return op, j.max, nil
}

// Replay undoes the operation left in flight, if any: it restores every
// recorded word, newest first, and marks the journal idle. Every offset it
// restores must lie in [lo, hi), 8-byte aligned, outside the journal; an
// entry that does not is corruption, reported as recovery.ErrCorrupt
// without writing anything. Replay is idempotent: a replay cut off by
// another crash is simply run again.
func (j *Journal) Replay(lo, hi uintptr) (op uint64, words int, err error) {
	op, words, err = j.Pending()
	if op == 0 || err != nil {
		return op, words, err
	}
	end := j.at + j.entry(uintptr(j.max)+1)
	for i := range words {
		off := uintptr(*j.word(j.entry(uintptr(i))) & offMask)
		if off%8 != 0 || off < lo || off >= hi || hi-off < 8 || (off >= j.at && off < end) {
			return op, words, fmt.Errorf("undo journal entry %d names offset %d, outside the data it may restore ([%d, %d)): %w", i, off, lo, hi, recovery.ErrCorrupt)
		}
	}
	for i := words - 1; i >= 0; i-- {
		e := j.entry(uintptr(i))
		off := uintptr(*j.word(e) & offMask)
		*(*uint64)(unsafe.Add(j.base, off)) = *j.word(e + 8)
	}
	j.End()
	return op, words, nil
}
