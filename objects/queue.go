package objects

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/futex"
	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/mapped"
)

// Queue is a bounded message queue in a segment, like Boost's
// message_queue: processes that map the segment send and receive byte
// messages of at most MaxMsgSize bytes, at most MaxMsgs of them queued,
// with a priority (higher first, first in first out within one). With a
// file backing the queued messages survive restarts.
//
// A Queue is this process's handle on the queue, which lives in the
// segment under a name: ConstructQueue creates it, FindQueue finds it.
// Every method is safe for concurrent use by goroutines and processes.
//
// Send and Receive are crash-atomic: a process killed in Send leaves the
// whole message queued or none of it, one killed in Receive leaves the
// message queued or consumed (taken off the queue; whether the caller
// got it is the caller's to know), never half and never twice. Calls
// take the queue's own Mutex (robust: a dead holder's half-done Send is
// finished by the next caller), copy the message, and publish with one
// store; a Send that overtakes lower priorities records its insertion
// first, and whoever finds it cut short finishes it.
//
// Blocking calls spin briefly, then sleep on a futex (an event count
// per direction) until the other side wakes them; they wake at least
// every 20 ms to look at their context. Receive copies into the
// caller's buffer and allocates nothing.
//
// Layout (a named array of 8-byte words; offsets in bytes):
//
//	0     magic "MSQUEUE1"
//	8     MaxMsgSize
//	16    MaxMsgs (the capacity)
//	24    reserved
//	32    the queue's Mutex
//	40    head (bits 0-31: the ring position of the first message) and
//	      count (bits 32-63): the publish word
//	48    event counts (futex): not empty (bytes 48-51), not full (52-55)
//	56    pending insertion: 0, or slot+1 (bits 0-31) and its place
//	      (bits 32-63, from the head)
//	64    pending insertion: the count it started from; the next place
//	      to fill, moving the ring down by one (roll forward)
//	80    reserved to 128
//	128   the ring: MaxMsgs slot numbers (4 bytes each), a permutation:
//	      the queued messages' slots in order from head, then the free
//	      slots
//	...   the slots, each an 8-byte word (length: bits 0-31, priority:
//	      bits 32-63) and MaxMsgSize bytes rounded up to 8
type Queue struct {
	seg  *mapped.Segment
	name string
	base unsafe.Pointer // the block's first byte
	cap  uint64
	max  uint64
	slot uint64 // bytes per slot
	mu   *Mutex
	hc   *uint64
}

// QueueConfig is the shape of a queue, fixed at construction.
type QueueConfig struct {
	MaxMsgSize int // the largest message, in bytes (0 to 16 MiB)
	MaxMsgs    int // how many messages it holds at most (1 to 16 Mi)
}

// ErrMsgSize: a message longer than the queue's MaxMsgSize (Send), or a
// buffer shorter than the message (Receive: the message stays queued).
var ErrMsgSize = errors.New("message size")

type queueWord struct{ W uint64 }

const (
	queueMagic  = 0x314555455551534d // "MSQUEUE1"
	queueName   = "Queue"
	qHeader     = 128
	qMu         = 32
	qHC         = 40
	qEvents     = 48
	qPending    = 56
	qPendingN   = 64
	qPendingAt  = 72
	qLimit      = 1 << 24
	qSpinChecks = 4000
)

// ConstructQueue creates the queue name in seg, as one crash-atomic step
// (mapped.ErrExists if the name is taken).
func ConstructQueue(seg *mapped.Segment, name string, cfg QueueConfig) (*Queue, error) {
	if cfg.MaxMsgSize < 0 || cfg.MaxMsgSize > qLimit || cfg.MaxMsgs < 1 || cfg.MaxMsgs > qLimit {
		return nil, fmt.Errorf("mapstore: construct queue %q in %s: MaxMsgSize %d and MaxMsgs %d (0..%d and 1..%d): %w", name, seg.Name(), cfg.MaxMsgSize, cfg.MaxMsgs, qLimit, qLimit, mapped.ErrInvalidSize)
	}
	c, m := uint64(cfg.MaxMsgs), uint64(cfg.MaxMsgSize)
	words := queueBytes(c, m) / 8
	_, err := constructArray(seg, name, int(words), func(a []queueWord) {
		a[0].W, a[1].W, a[2].W = queueMagic, m, c
		for i := range c {
			ring := (*[2]uint32)(unsafe.Pointer(&a[qHeader/8+i/2]))
			ring[i%2] = uint32(i)
		}
	})
	if err != nil {
		return nil, err
	}
	return FindQueue(seg, name)
}

// queueBytes is the size of a queue of c slots of m bytes.
func queueBytes(c, m uint64) uint64 {
	return qHeader + (c*4+7)&^7 + c*(8+(m+7)&^7)
}

// FindQueue finds the queue name in seg: mapped.ErrNotFound if there is
// none, ErrTypeMismatch if the name holds something else, and
// mapped.ErrCorrupt if its header does not describe the block.
func FindQueue(seg *mapped.Segment, name string) (*Queue, error) {
	a, err := FindArray[queueWord](seg, name)
	if err != nil {
		return nil, err
	}
	base := unsafe.Pointer(unsafe.SliceData(a))
	if len(a) < qHeader/8 || a[0].W != queueMagic {
		return nil, fmt.Errorf("mapstore: find queue %q in %s: not a queue (no queue header): %w", name, seg.Name(), ErrTypeMismatch)
	}
	c, m := a[2].W, a[1].W
	if c < 1 || c > qLimit || m > qLimit || queueBytes(c, m) != uint64(len(a))*8 {
		return nil, fmt.Errorf("mapstore: find queue %q in %s: header says %d slots of %d bytes, which do not make its %d bytes: %w", name, seg.Name(), c, m, len(a)*8, mapped.ErrCorrupt)
	}
	q := &Queue{seg: seg, name: name, base: base, cap: c, max: m, slot: 8 + (m+7)&^7}
	q.mu = (*Mutex)(unsafe.Add(base, qMu))
	q.hc = (*uint64)(unsafe.Add(base, qHC))
	return q, nil
}

// FindOrConstructQueue finds the queue name, or constructs it with cfg
// if it is absent. A queue found keeps its own shape.
func FindOrConstructQueue(seg *mapped.Segment, name string, cfg QueueConfig) (*Queue, error) {
	q, err := FindQueue(seg, name)
	if errors.Is(err, mapped.ErrNotFound) {
		q, err = ConstructQueue(seg, name, cfg)
		if errors.Is(err, mapped.ErrExists) {
			return FindQueue(seg, name)
		}
	}
	return q, err
}

// DestroyQueue removes the queue name and frees its memory, with
// whatever messages it holds. Nobody may use it meanwhile.
func DestroyQueue(seg *mapped.Segment, name string) error {
	if _, err := FindQueue(seg, name); err != nil {
		return err
	}
	return Destroy[queueWord](seg, name)
}

// Cap is the most messages the queue holds.
func (q *Queue) Cap() int { return int(q.cap) }

// MaxMsgSize is the longest message the queue takes.
func (q *Queue) MaxMsgSize() int { return int(q.max) }

// Len is the number of messages queued now.
func (q *Queue) Len() int {
	if q.seg.Size() == 0 {
		return 0 // closed
	}
	return int(min(atomic.LoadUint64(q.hc)>>32, q.cap))
}

func (q *Queue) w(off uintptr) *uint64 { return (*uint64)(unsafe.Add(q.base, off)) }

func (q *Queue) event(notFull bool) *event {
	if notFull {
		return (*event)(unsafe.Add(q.base, qEvents+4))
	}
	return (*event)(unsafe.Add(q.base, qEvents))
}

func (q *Queue) ring(pos uint64) *uint32 {
	return (*uint32)(unsafe.Add(q.base, qHeader+uintptr(pos%q.cap)*4))
}

// slotAt is slot s's header word; s was checked against the capacity.
func (q *Queue) slotAt(s uint64) *uint64 {
	return (*uint64)(unsafe.Add(q.base, uintptr(qHeader+(q.cap*4+7)&^7+s*q.slot)))
}

func (q *Queue) corrupt(method, format string, args ...any) error {
	return fmt.Errorf("mapstore: objects.Queue.%s %q in %s: %s: %w", method, q.name, q.seg.Name(), fmt.Sprintf(format, args...), mapped.ErrCorrupt)
}

// lock takes the queue's Mutex and finishes an insertion a dead sender
// left half done.
func (q *Queue) lock(ctx context.Context, method string) error {
	if err := writable(q.seg, queueName, method); err != nil {
		return err
	}
	if err := q.mu.LockContext(ctx); err != nil && !errors.Is(err, ErrOwnerDied) {
		return err
	}
	if atomic.LoadUint64(q.w(qPending)) != 0 {
		if err := q.finishInsert(method); err != nil {
			_ = q.mu.Unlock()
			return err
		}
	}
	return nil
}

// state reads the publish word, checked.
func (q *Queue) state(method string) (head, n uint64, err error) {
	v := atomic.LoadUint64(q.hc)
	head, n = v&(1<<32-1), v>>32
	if head >= q.cap || n > q.cap {
		return 0, 0, q.corrupt(method, "head %d and count %d in a queue of %d", head, n, q.cap)
	}
	return head, n, nil
}

// slotOf is the slot number at ring position pos, checked.
func (q *Queue) slotOf(method string, pos uint64) (uint64, error) {
	s := uint64(atomic.LoadUint32(q.ring(pos)))
	if s >= q.cap {
		return 0, q.corrupt(method, "ring position %d names slot %d of %d", pos%q.cap, s, q.cap)
	}
	return s, nil
}

// Send queues msg with priority prio, waiting while the queue is full.
func (q *Queue) Send(msg []byte, prio uint32) error {
	_, err := q.send(context.Background(), "Send", msg, prio, true)
	return err
}

// SendContext is Send that gives up when ctx ends (the message is then
// not queued).
func (q *Queue) SendContext(ctx context.Context, msg []byte, prio uint32) error {
	_, err := q.send(ctx, "SendContext", msg, prio, true)
	return err
}

// TrySend queues msg if the queue has room, and reports whether it did.
func (q *Queue) TrySend(msg []byte, prio uint32) (bool, error) {
	return q.send(context.Background(), "TrySend", msg, prio, false)
}

func (q *Queue) send(ctx context.Context, method string, msg []byte, prio uint32, wait bool) (bool, error) {
	if uint64(len(msg)) > q.max {
		return false, fmt.Errorf("mapstore: objects.Queue.%s %q in %s: a message of %d bytes, longer than the queue's %d: %w", method, q.name, q.seg.Name(), len(msg), q.max, ErrMsgSize)
	}
	for {
		if err := q.lock(ctx, method); err != nil {
			return false, err
		}
		head, n, err := q.state(method)
		if err == nil && n < q.cap {
			err = q.insert(method, head, n, msg, prio)
			_ = q.mu.Unlock()
			if err != nil {
				return false, err
			}
			q.event(false).notify()
			return true, nil
		}
		_ = q.mu.Unlock()
		if err != nil || !wait {
			return false, err
		}
		if err := q.await(ctx, method, true); err != nil {
			return false, err
		}
	}
}

// insert writes msg to the first free slot and puts it in its place;
// the queue's Mutex is held and n < cap.
func (q *Queue) insert(method string, head, n uint64, msg []byte, prio uint32) error {
	s, err := q.slotOf(method, head+n)
	if err != nil {
		return err
	}
	h := q.slotAt(s)
	copy(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(h), 8)), len(msg)), msg)
	*h = uint64(len(msg)) | uint64(prio)<<32
	// Its place: after every message of its priority or higher.
	k := n
	for k > 0 {
		t, err := q.slotOf(method, head+k-1)
		if err != nil {
			return err
		}
		if uint32(*q.slotAt(t)>>32) >= prio {
			break
		}
		k--
	}
	if k == n {
		journal.StoreOrdered(q.hc, head|(n+1)<<32) // publish
		return nil
	}
	// Overtaking: record the insertion, then move the ring down by one
	// from place k, counting progress, so that a cut-short insertion can
	// be finished (finishInsert).
	*q.w(qPendingN), *q.w(qPendingAt) = n, n
	journal.StoreOrdered(q.w(qPending), (s+1)|k<<32)
	return q.finishInsert(method)
}

// finishInsert finishes the recorded insertion: the move of the ring,
// the slot in its place, the publish, the record cleared. Each step can
// be done again, so a finish cut short is finished again.
func (q *Queue) finishInsert(method string) error {
	rec := atomic.LoadUint64(q.w(qPending))
	s, k := rec&(1<<32-1)-1, rec>>32
	n, at := *q.w(qPendingN), *q.w(qPendingAt)
	head, count, err := q.state(method)
	if err != nil {
		return err
	}
	if s >= q.cap || k > n || n >= q.cap || at < k || at > n || (count != n && count != n+1) {
		return q.corrupt(method, "pending insertion %#x (from %d, at %d) in a queue of %d holding %d", rec, n, at, q.cap, count)
	}
	if count == n {
		for ; at > k; at-- {
			*q.ring(head + at) = *q.ring(head + at - 1)
			journal.StoreOrdered(q.w(qPendingAt), at-1)
		}
		*q.ring(head + k) = uint32(s)
		journal.StoreOrdered(q.hc, head|(n+1)<<32) // publish
	}
	journal.StoreOrdered(q.w(qPending), 0)
	return nil
}

// Receive takes the first message (the oldest of the highest priority)
// into buf, waiting while the queue is empty, and returns its length and
// priority. A buf shorter than the message is ErrMsgSize, and the
// message stays queued.
func (q *Queue) Receive(buf []byte) (int, uint32, error) {
	n, prio, _, err := q.receive(context.Background(), "Receive", buf, true)
	return n, prio, err
}

// ReceiveContext is Receive that gives up when ctx ends.
func (q *Queue) ReceiveContext(ctx context.Context, buf []byte) (int, uint32, error) {
	n, prio, _, err := q.receive(ctx, "ReceiveContext", buf, true)
	return n, prio, err
}

// TryReceive is Receive that does not wait: ok says whether a message
// was taken.
func (q *Queue) TryReceive(buf []byte) (n int, prio uint32, ok bool, err error) {
	return q.receive(context.Background(), "TryReceive", buf, false)
}

func (q *Queue) receive(ctx context.Context, method string, buf []byte, wait bool) (int, uint32, bool, error) {
	for {
		if err := q.lock(ctx, method); err != nil {
			return 0, 0, false, err
		}
		head, n, err := q.state(method)
		if err == nil && n > 0 {
			size, prio, err := q.take(method, head, n, buf)
			_ = q.mu.Unlock()
			if err != nil {
				return 0, 0, false, err
			}
			q.event(true).notify()
			return size, prio, true, nil
		}
		_ = q.mu.Unlock()
		if err != nil || !wait {
			return 0, 0, false, err
		}
		if err := q.await(ctx, method, false); err != nil {
			return 0, 0, false, err
		}
	}
}

// take copies the message at the head into buf and publishes its
// removal; the queue's Mutex is held and n > 0.
func (q *Queue) take(method string, head, n uint64, buf []byte) (int, uint32, error) {
	s, err := q.slotOf(method, head)
	if err != nil {
		return 0, 0, err
	}
	h := q.slotAt(s)
	hv := *h
	size := hv & (1<<32 - 1)
	if size > q.max {
		return 0, 0, q.corrupt(method, "slot %d holds a message of %d bytes, longer than the queue's %d", s, size, q.max)
	}
	if size > uint64(len(buf)) {
		return 0, 0, fmt.Errorf("mapstore: objects.Queue.%s %q in %s: a buffer of %d bytes for a message of %d: %w (%w)", method, q.name, q.seg.Name(), len(buf), size, ErrMsgSize, io.ErrShortBuffer)
	}
	copy(buf, unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(h), 8)), size))
	journal.StoreOrdered(q.hc, (head+1)%q.cap|(n-1)<<32) // publish
	return int(size), uint32(hv >> 32), nil
}

// ready reports whether a sender (notFull) or a receiver would find what
// it waits for.
func (q *Queue) ready(notFull bool) bool {
	n := atomic.LoadUint64(q.hc) >> 32
	if notFull {
		return n < q.cap
	}
	return n > 0
}

// await waits until the queue looks not full (notFull) or not empty:
// spinning a while, then sleeping on the event count.
func (q *Queue) await(ctx context.Context, method string, notFull bool) error {
	for i := 0; i < qSpinChecks; i++ {
		if q.ready(notFull) {
			return nil
		}
		if i%64 == 63 {
			runtime.Gosched()
		}
	}
	e := q.event(notFull)
	defer wakeOnDone(ctx, &e.v)()
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mapstore: objects.Queue.%s %q in %s: %w", method, q.name, q.seg.Name(), err)
		}
		if err := writable(q.seg, queueName, method); err != nil {
			return err
		}
		v, d := e.markFenced()
		if q.ready(notFull) {
			return nil
		}
		if !futex.Wait(&e.v, v, d) {
			return nil // look again: a waker may have died before waking
		}
	}
}
