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
// got it is the caller's to know), never half and never twice.
//
// Senders and receivers do not share a lock. Senders take the queue's
// send Mutex, copy the message into a free slot and publish it with one
// store of the tail (the count of messages ever queued); receivers take
// the receive Mutex, copy the first message out and publish its removal
// with one store of the head (the count ever taken). So a sender and a
// receiver work at once, each on cache lines of its own, and each side
// rereads the other's word only when what it saw last says the queue is
// full (a sender) or empty (a receiver). Both Mutexes are robust: a dead
// holder's half-done call is simply not published. A Send that overtakes
// lower priorities holds both Mutexes (send first), records its
// insertion, moves the ring and publishes; whoever finds such a record
// left by a dead sender finishes it before anything else.
//
// Blocking calls spin briefly, then sleep on a futex (an event count
// per direction) until the other side wakes them; they wake at least
// every 20 ms to look at their context. A handle whose waits keep ending
// in sleep spins much less (the other side shares the core, or is
// slow), but for every 16th wait, until a spin succeeds again. Receive copies into the
// caller's buffer and allocates nothing.
//
// A sender reads ahead for writing (a prefetch) the slot it will fill
// some messages later, and a receiver the slot it will read next but
// one: the cache lines then move between the processors' caches in the
// background, not while the call waits. Slots start cache lines, so a
// sender filling one and a receiver reading the one before never share
// a line. Measured across two processes on two cores, 64-byte messages:
// 25-75 ns a message against 72-77 for the layout with one Mutex, and
// 48-130 against 190-290 where the two cores were far apart (a cache
// line's round trip 535 ns instead of 66-118).
//
// Layout (a named array of 8-byte words; offsets in bytes):
//
//	0     magic "MSQUEUE2"
//	8     MaxMsgSize
//	16    MaxMsgs (the capacity)
//
// and from the origin, the first 64-byte boundary at least 24 bytes in
// (24 to 87 bytes in; the same in every process, as segments map at
// page boundaries), each word the two sides write on a cache line of
// its own:
//
//	0     the send Mutex
//	64    tail: how many messages were ever queued (Send's publish word)
//	128   the receive Mutex
//	192   head: how many messages were ever taken (Receive's publish
//	      word); tail-head messages are queued, at most MaxMsgs
//	256   pending insertion: 0, or slot+1 (bits 0-31) and its place
//	      (bits 32-63, from the head); read by both sides on every call,
//	      written only by a Send that overtakes
//	264   pending insertion: the tail it started from
//	272   pending insertion: the next place to fill, moving the ring
//	      down by one (roll forward)
//	320   event counts (futex): not empty (bytes 320-323), not full
//	      (324-327)
//	384   the ring: MaxMsgs slot numbers (4 bytes each), a permutation:
//	      from ring position head%MaxMsgs on, the queued messages' slots
//	      in order, then the free slots; rounded up to 64 bytes
//	...   the slots, each an 8-byte word (length: bits 0-31, priority:
//	      bits 32-63) and MaxMsgSize bytes, rounded up to 64 bytes (a
//	      queue of 64-byte messages takes 128 bytes a message)
//
// The block is 88 bytes longer than what the origin's layout takes, so
// that it fits wherever the origin falls.
type Queue struct {
	seg    *mapped.Segment
	name   string
	base   unsafe.Pointer // the block's first byte
	org    unsafe.Pointer // the origin: offsets from it are q*
	slots  unsafe.Pointer // slot 0
	cap    uint64
	max    uint64
	slot   uint64 // bytes per slot
	sendMu *Mutex
	recvMu *Mutex
	tail   *uint64
	head   *uint64
	// What this handle last read of the other side's word: the head a
	// sender saw, the tail a receiver saw. Both words only grow, so what
	// was seen is a bound that stays true: up to it the queue has room,
	// or messages.
	//
	// These and the two below are plain fields, guarded by the send
	// Mutex (headSeen, lastTail, lastPrio) or the receive Mutex
	// (tailSeen): an atomic store is a full barrier on amd64, and would
	// wait for this call's stores to reach lines the other side holds.
	headSeen uint64
	tailSeen uint64
	// The tail this handle published last and the priority of the
	// message then last in the queue: while the tail is still that, a
	// Send knows the priority without reading the slot, a line the
	// receivers read last (on some machines, a miss).
	lastTail uint64
	lastPrio uint32
	// How many waits in a row, for each direction (0: not full, 1: not
	// empty), found the queue still not ready after spinning and slept.
	// From qSpinFails on, a wait spins only qSpinMin looks, but for
	// every qSpinRetry-th; a wait that finds the queue ready while it
	// spins starts the count again. Where the other side shares this
	// core, a spin cannot succeed (the other side does not run
	// meanwhile) and only delays it; where it runs on another core, a
	// wait of a round trip finds the queue ready within the spin, and a
	// wait now and then that does not (the other side was asleep) does
	// not shorten the next.
	fails [2]atomic.Int32
	waits [2]atomic.Uint32
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
	queueMagic   = 0x324555455551534d // "MSQUEUE2"
	queueMagicV1 = 0x314555455551534d // "MSQUEUE1": one Mutex for both sides
	queueName    = "Queue"
	qSendMu      = 0
	qTail        = 64
	qRecvMu      = 128
	qHead        = 192
	qPending     = 256
	qPendingT    = 264
	qPendingAt   = 272
	qEvents      = 320
	qRing        = 384
	qOrgMax      = 88 // the origin is at most 87 bytes in
	qLimit       = 1 << 24
	qSpinChecks  = 4000
	qSpinMin     = 16
	qSpinRetry   = 16
	qSpinFails   = 8
	// How far ahead a sender prefetches the slot it will fill, and a
	// receiver the one it will read.
	qSendAhead = 8
	qRecvAhead = 2
)

// queueOrigin is the origin of the queue block at base.
func queueOrigin(base unsafe.Pointer) unsafe.Pointer {
	off := (uintptr(base)+24+63)&^63 - uintptr(base)
	return unsafe.Add(base, off)
}

// queueSlotBytes is a slot's size: the header word and m bytes, rounded
// up to a cache line.
func queueSlotBytes(m uint64) uint64 { return (8 + m + 63) &^ 63 }

// queueRingBytes is the ring's size, rounded up to a cache line.
func queueRingBytes(c uint64) uint64 { return (c*4 + 63) &^ 63 }

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
		ring := unsafe.Slice((*uint32)(unsafe.Add(queueOrigin(unsafe.Pointer(unsafe.SliceData(a))), qRing)), c)
		for i := range ring {
			ring[i] = uint32(i)
		}
	})
	if err != nil {
		return nil, err
	}
	return FindQueue(seg, name)
}

// queueBytes is the size of a queue of c slots of m bytes.
func queueBytes(c, m uint64) uint64 {
	return qOrgMax + qRing + queueRingBytes(c) + c*queueSlotBytes(m)
}

// FindQueue finds the queue name in seg: mapped.ErrNotFound if there is
// none, ErrTypeMismatch if the name holds something else,
// mapped.ErrVersion if it holds a queue of an older layout, and
// mapped.ErrCorrupt if its header does not describe the block.
func FindQueue(seg *mapped.Segment, name string) (*Queue, error) {
	a, err := FindArray[queueWord](seg, name)
	if err != nil {
		return nil, err
	}
	base := unsafe.Pointer(unsafe.SliceData(a))
	if len(a) > 0 && a[0].W == queueMagicV1 {
		return nil, fmt.Errorf("mapstore: find queue %q in %s: a queue of an older layout (\"MSQUEUE1\"; this build reads \"MSQUEUE2\"): %w", name, seg.Name(), mapped.ErrVersion)
	}
	if len(a) < (qOrgMax+qRing)/8 || a[0].W != queueMagic {
		return nil, fmt.Errorf("mapstore: find queue %q in %s: not a queue (no queue header): %w", name, seg.Name(), ErrTypeMismatch)
	}
	c, m := a[2].W, a[1].W
	if c < 1 || c > qLimit || m > qLimit || queueBytes(c, m) != uint64(len(a))*8 {
		return nil, fmt.Errorf("mapstore: find queue %q in %s: header says %d slots of %d bytes, which do not make its %d bytes: %w", name, seg.Name(), c, m, len(a)*8, mapped.ErrCorrupt)
	}
	org := queueOrigin(base)
	q := &Queue{seg: seg, name: name, base: base, org: org, cap: c, max: m, slot: queueSlotBytes(m)}
	q.slots = unsafe.Add(org, qRing+queueRingBytes(c))
	q.sendMu = (*Mutex)(unsafe.Add(org, qSendMu))
	q.recvMu = (*Mutex)(unsafe.Add(org, qRecvMu))
	q.tail = (*uint64)(unsafe.Add(org, qTail))
	q.head = (*uint64)(unsafe.Add(org, qHead))
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
	h := atomic.LoadUint64(q.head)
	t := atomic.LoadUint64(q.tail)
	if t < h {
		return 0 // damaged: the head is loaded first, and never passes the tail
	}
	return int(min(t-h, q.cap))
}

func (q *Queue) w(off uintptr) *uint64 { return (*uint64)(unsafe.Add(q.org, off)) }

func (q *Queue) event(notFull bool) *event {
	if notFull {
		return (*event)(unsafe.Add(q.org, qEvents+4))
	}
	return (*event)(unsafe.Add(q.org, qEvents))
}

func (q *Queue) ring(pos uint64) *uint32 {
	return (*uint32)(unsafe.Add(q.org, qRing+uintptr(pos%q.cap)*4))
}

// slotAt is slot s's header word; s was checked against the capacity.
func (q *Queue) slotAt(s uint64) *uint64 {
	return (*uint64)(unsafe.Add(q.slots, uintptr(s*q.slot)))
}

// prefetchSlot reads ahead the first two cache lines of the slot at ring
// position pos (for writing, if write): the header and the first 120
// bytes of a message. A bad ring entry is only not read ahead.
func (q *Queue) prefetchSlot(pos uint64, write bool) {
	s := uint64(atomic.LoadUint32(q.ring(pos)))
	if s >= q.cap {
		return
	}
	p := unsafe.Pointer(q.slotAt(s))
	if write {
		prefetchw(p)
		if q.slot > 64 {
			prefetchw(unsafe.Add(p, 64))
		}
		return
	}
	prefetch(p)
	if q.slot > 64 {
		prefetch(unsafe.Add(p, 64))
	}
}

func (q *Queue) corrupt(method, format string, args ...any) error {
	if q.seg.Closed() {
		return fmt.Errorf("mapstore: objects.Queue.%s %q in %s: %w (closed during the call)", method, q.name, q.seg.Name(), mapped.ErrClosed)
	}
	return fmt.Errorf("mapstore: objects.Queue.%s %q in %s: %s: %w", method, q.name, q.seg.Name(), fmt.Sprintf(format, args...), mapped.ErrCorrupt)
}

// lockMu takes one of the queue's Mutexes for method. A holder that died
// is no error here: what it left is unpublished, or a pending insertion
// record that lockSend and lockRecv finish.
func (q *Queue) lockMu(ctx context.Context, mu *Mutex, method string) error {
	if err := writable(q.seg, queueName, method); err != nil {
		return err
	}
	if err := mu.LockContext(ctx); err != nil && !errors.Is(err, ErrOwnerDied) {
		return err
	}
	return nil
}

// lockSend takes the send Mutex. A sender that died in the middle of an
// overtaking insertion held the receive Mutex too, and left a record:
// then the insertion is finished, under both, before anything else.
func (q *Queue) lockSend(ctx context.Context, method string) error {
	if err := q.lockMu(ctx, q.sendMu, method); err != nil {
		return err
	}
	if atomic.LoadUint64(q.w(qPending)) != 0 {
		if err := q.lockRecv(ctx, method); err != nil {
			_ = q.sendMu.Unlock()
			return err
		}
		_ = q.recvMu.Unlock()
	}
	return nil
}

// lockRecv takes the receive Mutex and finishes an insertion a dead
// sender left half done. It may do so without the send Mutex: only a
// holder of both writes a record, so its writer is dead; and every
// sender looks for a record as soon as it holds the send Mutex, and
// finishes it (taking the receive Mutex: lockSend) before it touches the
// ring or the tail, or gives up and releases the send Mutex untouched.
// So no live sender touches the ring or the tail while a record stands.
func (q *Queue) lockRecv(ctx context.Context, method string) error {
	if err := q.lockMu(ctx, q.recvMu, method); err != nil {
		return err
	}
	if atomic.LoadUint64(q.w(qPending)) != 0 {
		queueFinished.Add(1)
		if err := q.finishInsert(method); err != nil {
			_ = q.recvMu.Unlock()
			return err
		}
	}
	return nil
}

// queueFinished counts the insertions this process found left by a dead
// sender and finished; tests read it.
var queueFinished atomic.Int64

// counts reads the head and the tail, checked: the head at most the
// tail, the tail at most a capacity past it.
func (q *Queue) counts(method string) (head, tail uint64, err error) {
	head = atomic.LoadUint64(q.head)
	tail = atomic.LoadUint64(q.tail)
	if tail < head || tail-head > q.cap {
		return 0, 0, q.corrupt(method, "head %d and tail %d in a queue of %d", head, tail, q.cap)
	}
	return head, tail, nil
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
		sent, err := q.sendOnce(ctx, method, msg, prio)
		if err != nil {
			return false, err
		}
		if sent {
			q.event(false).notify()
			return true, nil
		}
		if !wait {
			return false, nil
		}
		if err := q.await(ctx, method, true); err != nil {
			return false, err
		}
	}
}

// sendOnce queues msg under the send Mutex if there is room, and
// releases the Mutex on every path, a panic included.
func (q *Queue) sendOnce(ctx context.Context, method string, msg []byte, prio uint32) (bool, error) {
	if err := q.lockSend(ctx, method); err != nil {
		return false, err
	}
	defer func() { _ = q.sendMu.Unlock() }()
	return q.insert(ctx, method, msg, prio)
}

// insert queues msg if there is room; the send Mutex is held.
func (q *Queue) insert(ctx context.Context, method string, msg []byte, prio uint32) (bool, error) {
	t := atomic.LoadUint64(q.tail)
	h := q.headSeen
	if h > t || t-h >= q.cap {
		h = atomic.LoadUint64(q.head)
		if h > t || t-h > q.cap {
			return false, q.corrupt(method, "head %d and tail %d in a queue of %d", h, t, q.cap)
		}
		q.headSeen = h
		if t-h == q.cap {
			return false, nil // full
		}
	}
	s, err := q.slotOf(method, t)
	if err != nil {
		return false, err
	}
	if t+qSendAhead < h+q.cap {
		q.prefetchSlot(t+qSendAhead, true) // free, and this side's to fill
	}
	hd := q.slotAt(s)
	copy(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(hd), 8)), len(msg)), msg)
	*hd = uint64(len(msg)) | uint64(prio)<<32
	if t > h {
		// The last message queued (or, if a receiver took it since,
		// the one it left in that slot, which no sender reuses before
		// this one: either way a message not below prio) lets it go
		// last.
		lp := q.lastPrio
		if q.lastTail != t {
			last, err := q.slotOf(method, t-1)
			if err != nil {
				return false, err
			}
			lp = uint32(*q.slotAt(last) >> 32)
		}
		if lp < prio {
			if queueHook != nil {
				queueHook("written")
			}
			return true, q.overtake(ctx, method, s, prio, lp)
		}
	}
	journal.StoreOrdered(q.tail, t+1) // publish
	q.published(t+1, prio)
	return true, nil
}

// published notes what this handle published: the tail and the
// priority of the message last in the queue.
func (q *Queue) published(tail uint64, prio uint32) {
	q.lastTail, q.lastPrio = tail, prio
}

// overtake puts the message in slot s, of priority prio, after every
// queued message of its priority or higher: the send Mutex is held, and
// it takes the receive Mutex so that the head holds still. It records
// the insertion, then moves the ring down by one from its place,
// counting progress, so that a cut-short insertion can be finished
// (finishInsert).
func (q *Queue) overtake(ctx context.Context, method string, s uint64, prio, lastPrio uint32) error {
	if err := q.lockRecv(ctx, method); err != nil {
		return err
	}
	defer func() { _ = q.recvMu.Unlock() }()
	h, t, err := q.counts(method)
	if err != nil {
		return err
	}
	n := t - h
	k := n
	for k > 0 {
		u, err := q.slotOf(method, h+k-1)
		if err != nil {
			return err
		}
		if uint32(*q.slotAt(u)>>32) >= prio {
			break
		}
		k--
	}
	if k == n {
		journal.StoreOrdered(q.tail, t+1) // the queue emptied meanwhile
		q.published(t+1, prio)
		return nil
	}
	*q.w(qPendingT), *q.w(qPendingAt) = t, n
	journal.StoreOrdered(q.w(qPending), (s+1)|k<<32)
	if queueHook != nil {
		queueHook("recorded")
	}
	if err := q.finishInsert(method); err != nil {
		return err
	}
	q.published(t+1, lastPrio) // the last message stays last
	return nil
}

// finishInsert finishes the recorded insertion: the move of the ring,
// the slot in its place, the publish, the record cleared. The receive
// Mutex is held. Each step can be done again, so a finish cut short is
// finished again.
func (q *Queue) finishInsert(method string) error {
	rec := atomic.LoadUint64(q.w(qPending))
	s, k := rec&(1<<32-1)-1, rec>>32
	from, at := *q.w(qPendingT), *q.w(qPendingAt)
	h, t, err := q.counts(method)
	if err != nil {
		return err
	}
	if s >= q.cap || from < h || from-h >= q.cap || k > at || at > from-h || (t != from && t != from+1) {
		return q.corrupt(method, "pending insertion %#x (from tail %d, at %d) in a queue of %d with head %d and tail %d", rec, from, at, q.cap, h, t)
	}
	if t == from {
		for ; at > k; at-- {
			*q.ring(h + at) = *q.ring(h + at - 1)
			if queueHook != nil {
				queueHook("moved")
			}
			journal.StoreOrdered(q.w(qPendingAt), at-1)
		}
		*q.ring(h + k) = uint32(s)
		journal.StoreOrdered(q.tail, from+1) // publish
		if queueHook != nil {
			queueHook("published")
		}
	}
	journal.StoreOrdered(q.w(qPending), 0)
	return nil
}

// queueHook, when not nil, is called at the steps of an overtaking Send:
// "written" (the slot, under the send Mutex only), "recorded" (the
// insertion, under both), "moved" (each ring entry moved, before the
// step is counted) and "published" (before the record is cleared).
// Tests set it to kill the process there.
var queueHook func(step string)

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
		size, prio, ok, err := q.receiveOnce(ctx, method, buf)
		if err != nil {
			return 0, 0, false, err
		}
		if ok {
			q.event(true).notify()
			return size, prio, true, nil
		}
		if !wait {
			return 0, 0, false, nil
		}
		if err := q.await(ctx, method, false); err != nil {
			return 0, 0, false, err
		}
	}
}

// receiveOnce takes the first message under the receive Mutex, if there
// is one, and releases the Mutex on every path, a panic included.
func (q *Queue) receiveOnce(ctx context.Context, method string, buf []byte) (int, uint32, bool, error) {
	if err := q.lockRecv(ctx, method); err != nil {
		return 0, 0, false, err
	}
	defer func() { _ = q.recvMu.Unlock() }()
	return q.take(method, buf)
}

// take copies the message at the head into buf and publishes its
// removal, if there is one; the receive Mutex is held.
func (q *Queue) take(method string, buf []byte) (int, uint32, bool, error) {
	h := atomic.LoadUint64(q.head)
	t := q.tailSeen
	if t <= h || t-h > q.cap {
		t = atomic.LoadUint64(q.tail)
		if t < h || t-h > q.cap {
			return 0, 0, false, q.corrupt(method, "head %d and tail %d in a queue of %d", h, t, q.cap)
		}
		q.tailSeen = t
		if t == h {
			return 0, 0, false, nil // empty
		}
	}
	s, err := q.slotOf(method, h)
	if err != nil {
		return 0, 0, false, err
	}
	if h+qRecvAhead < t {
		q.prefetchSlot(h+qRecvAhead, false) // queued
	}
	hd := q.slotAt(s)
	hv := *hd
	size := hv & (1<<32 - 1)
	if size > q.max {
		return 0, 0, false, q.corrupt(method, "slot %d holds a message of %d bytes, longer than the queue's %d", s, size, q.max)
	}
	if size > uint64(len(buf)) {
		return 0, 0, false, fmt.Errorf("mapstore: objects.Queue.%s %q in %s: a buffer of %d bytes for a message of %d: %w (%w)", method, q.name, q.seg.Name(), len(buf), size, ErrMsgSize, io.ErrShortBuffer)
	}
	copy(buf, unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(hd), 8)), size))
	journal.StoreOrdered(q.head, h+1) // publish
	return int(size), uint32(hv >> 32), true, nil
}

// ready reports whether a sender (notFull) or a receiver would find what
// it waits for.
func (q *Queue) ready(notFull bool) bool {
	h := atomic.LoadUint64(q.head)
	t := atomic.LoadUint64(q.tail)
	if notFull {
		return t < h || t-h < q.cap // t < h: damaged (Send then says so)
	}
	return t != h
}

// spinBudget returns how many waits in direction d slept in a row
// before this one, and how many looks this one spins (see fails).
func (q *Queue) spinBudget(d int) (int32, int) {
	fails := q.fails[d].Load()
	if fails >= qSpinFails && q.waits[d].Add(1)%qSpinRetry != 0 {
		return fails, qSpinMin
	}
	return fails, qSpinChecks
}

// await waits until the queue looks not full (notFull) or not empty:
// spinning a while, then sleeping on the event count.
func (q *Queue) await(ctx context.Context, method string, notFull bool) error {
	d := 0
	if !notFull {
		d = 1
	}
	fails, budget := q.spinBudget(d)
	for i := 0; i < budget; i++ {
		if q.ready(notFull) {
			if fails != 0 {
				q.fails[d].Store(0)
			}
			return nil
		}
		if i%64 == 63 {
			runtime.Gosched()
		}
	}
	if fails < qSpinFails {
		q.fails[d].Store(fails + 1)
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
