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
//	0       8     active: 0 idle, else the operation code of the operation in flight
//	8       8     entries written by the operation in flight (the owner's
//	              count; a replay scans for the terminator instead)
//	16      16*n  entries: word 0 = valid bit 63 | offset of the changed word;
//	              word 1 = its old value. The entry after the last valid one
//	              has word 0 cleared, so a replay stops there.
//
// Ordering. Each record is written before the change it covers, with plain
// stores. That is enough for a process crash on amd64: the Go compiler keeps
// stores in program order (every store is threaded through one memory
// state), and x86 makes stores visible in program order (TSO). The memory
// of a killed process stays in the page cache, so what survives is a prefix
// of its stores. On other architectures the store that makes an entry valid
// is a release store (see order_other.go).
//
// Power loss is a different matter: dirty pages reach the disk in any
// order, so a journal cannot help there; Flush is the durability point.
type Journal struct {
	base unsafe.Pointer // segment base
	at   uintptr        // offset of the journal
	max  int            // capacity in entries
}

// Journal geometry.
const (
	HeaderLen    = 16
	EntryLen     = 16
	journalValid = uint64(1) << 63
)

// At is the journal of size bytes at offset at of the mapping that
// starts at base.
func At(base unsafe.Pointer, at uintptr, size int) Journal {
	return Journal{base: base, at: at, max: (size-HeaderLen)/EntryLen - 1}
}

func (j *Journal) word(off uintptr) *uint64 {
	return (*uint64)(unsafe.Add(j.base, off))
}

// Begin starts an operation with the given non-zero code.
func (j *Journal) Begin(op uint64) {
	*j.word(j.at + HeaderLen) = 0
	*j.word(j.at + 8) = 0
	StoreOrdered(j.word(j.at), op)
}

// Set64 records the word at off and then sets it to v.
func (j *Journal) Set64(off uintptr, v uint64) {
	cnt := (*uint64)(unsafe.Add(j.base, j.at+8))
	n := *cnt
	if n >= uint64(j.max) {
		journalFull(j.max)
	}
	p := (*uint64)(unsafe.Add(j.base, off))
	e := unsafe.Add(j.base, j.at+HeaderLen+uintptr(n)*EntryLen)
	*(*uint64)(unsafe.Add(e, EntryLen)) = 0 // terminator
	*(*uint64)(unsafe.Add(e, 8)) = *p
	StoreOrdered((*uint64)(e), journalValid|uint64(off))
	*cnt = n + 1
	*p = v
}

// Record records the current value of the word at off, which the caller
// is about to change.
func (j *Journal) Record(off uintptr) { j.Set64(off, *j.word(off)) }

func journalFull(max int) {
	panic(fmt.Sprintf("mapstore: undo journal full (%d entries): an operation changed too many words", max))
}

// End finishes the operation: its changes stand.
func (j *Journal) End() {
	StoreOrdered(j.word(j.at), 0)
}

// Entries is how many words the operation in flight has recorded.
func (j *Journal) Entries() int { return int(*j.word(j.at + 8)) }

// Pending reports the operation a dead owner left in flight (0 if none)
// and how many words it recorded.
func (j *Journal) Pending() (op uint64, words int) {
	op = *j.word(j.at)
	if op == 0 {
		return 0, 0
	}
	for i := 0; i <= j.max; i++ {
		if *j.word(j.at + HeaderLen + uintptr(i)*EntryLen)&journalValid == 0 {
			return op, i
		}
	}
	return op, j.max
}

// Replay undoes the operation left in flight, if any: it restores every
// recorded word, newest first, and marks the journal idle. limit bounds
// the offsets it will write (the segment's size); an entry beyond it is
// corruption, reported as recovery.ErrCorrupt without writing anything. Replay is
// idempotent: a replay cut off by another crash is simply run again.
func (j *Journal) Replay(limit uintptr) (op uint64, words int, err error) {
	op, words = j.Pending()
	if op == 0 {
		return 0, 0, nil
	}
	for i := 0; i < words; i++ {
		off := uintptr(*j.word(j.at + HeaderLen + uintptr(i)*EntryLen) &^ journalValid)
		if off%8 != 0 || off+8 > limit {
			return op, words, fmt.Errorf("undo journal entry %d names offset %d, outside the segment (%d bytes): %w", i, off, limit, recovery.ErrCorrupt)
		}
	}
	for i := words - 1; i >= 0; i-- {
		e := j.at + HeaderLen + uintptr(i)*EntryLen
		off := uintptr(*j.word(e) &^ journalValid)
		*j.word(off) = *j.word(e + 8)
	}
	StoreOrdered(j.word(j.at), 0)
	return op, words, nil
}
