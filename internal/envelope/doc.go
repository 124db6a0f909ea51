// Package envelope owns a segment's envelope: the checksummed header (two
// copies written alternately), the attached-process table whose liveness
// is kept by OFD locks, the clean/dirty state, undo records and their
// replay (package journal holds the undo records themselves). What an
// open found and did goes into a recovery.Report.
//
// It knows nothing of allocators or names: the layers above register root
// offsets in the header and use the envelope to make their own operations
// recoverable.
//
// A new segment is built in a file no other process can see and published
// whole (create.go); an existing one is validated, attached and recovered
// under the meta lock (envelope.go); Close detaches under the meta lock,
// retires the mapping so that calls still in flight never fault, and the
// last open out checks and marks the segment through the descriptor
// (close.go).
//
// # Layout
//
// The envelope occupies the first EnvelopeSize bytes (one page) of every
// segment, so that a small segment keeps its pages for data:
//
//	offset  size  what
//	0       512   header copy A (see Header for its fields)
//	512     512   header copy B (another disk sector)
//	1024    8     live size: the header's size, readable with one atomic load
//	1032    8     attach counter, for attach ids (writable opens over the segment's life)
//	1040    16    occupied-seat mask: which seats of the table to look at
//	1056    32    reserved
//	1088    2032  attached-process table: MaxSeats seats of 16 bytes
//	3120    976   reserved
//	4096          first byte the layers above may use
//
// OFD locks are taken on single bytes far beyond any data (LockBase and
// up): the meta lock that serialises opens, closes, growth and header
// writes, and one liveness lock per seat of the attached-process table.
package envelope
