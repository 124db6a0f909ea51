// Package objects puts Go values in a mapstore segment: named objects and
// arrays, anonymous objects, one-per-type instances, offset pointers,
// containers (Vector, String, List, Map, HashMap), all type-checked, and
// the synchronisation primitives and message queue that processes share
// through it (Mutex, RWMutex, Cond, Semaphore, Queue).
//
//	p, err := objects.Construct(seg, "counter", Counter{})        // mapped.ErrExists if taken
//	a, err := objects.ConstructArray(seg, "table", 10, Entry{})    // []Entry, len 10
//	a, err  = objects.ConstructArrayFunc(seg, "squares", 5, func(i int) int64 { return int64(i * i) })
//	p, err  = objects.FindOrConstruct(seg, "counter", Counter{})
//	p, err  = objects.Find[Counter](seg, "counter")                // mapped.ErrNotFound, ErrTypeMismatch
//	a, err  = objects.FindArray[Entry](seg, "table")
//	err     = objects.Destroy[Counter](seg, "counter")
//	q, err := objects.New[Node](seg)                               // anonymous, zeroed
//	err     = objects.Delete(seg, q)
//	b, err := objects.NewArray[Node](seg, 8)                       // anonymous array
//	err     = objects.DeleteArray(seg, b)
//	c, err := objects.ConstructUnique(seg, Config{})               // one per type
//	h, err := objects.HandleOf(seg, q)                             // mapped.Handle, for another process
//	q, err  = objects.At[Node](seg, h)
//	for info := range objects.Named(seg) { /* info.Name, info.Type, info.Count, info.Size */ }
//	n, err := objects.NewInto(&head.Next)                          // allocate and link, one crash-atomic step
//
// # Containers
//
//	v, err := objects.Construct(seg, "MyVector", objects.Vector[int64]{})
//	err = v.Append(1, 2, 3)          // mapped.ErrNoSpace if the segment is full; v unchanged
//	p := v.At(0)                     // *int64 in place; out of range panics like a slice
//	slices.Sort(v.Slice())           // a view over the storage, valid until it moves
//	err = v.Insert(1, 10); err = v.Delete(0, 2); err = v.Truncate(1)
//
//	var name objects.String          // as a field of a value in the segment
//	err = name.Set("hello"); name.String(); name.Equal("hello")
//
//	m, err := objects.Construct(seg, "people", objects.Map[string, Record]{})
//	r, inserted, err := m.GetOrInsert("alice")  // a zero Record built in place
//	err = r.Name.Set("Alice"); ok := m.Has("alice"); ok, err = m.Delete("alice")
//	for k, r := range m.All() { /* key order */ }
//
//	h, err := objects.Construct(seg, "ids", objects.HashMap[string, int64]{})  // unordered
//	err = h.Set("bob", 2); p, ok := h.Get("bob")
//
//	l, err := objects.Construct(seg, "queue", objects.List[Job]{})
//	e, err := l.PushBack(Job{ID: 1})
//	for j := range l.All() { /* *Job in place */ }
//	err = l.Remove(l.Front())
//
// A container is a small header (24 bytes) holding offsets; its storage
// is blocks of the segment. It lives in the segment like any value (a
// named object, a field, an element of another container) and is used
// through a pointer into the segment. Containers nest to any depth
// (Vector[String], List[Vector[int64]], Map[string, Record] where Record
// holds a String and a Vector[String]); Delete, Truncate, Clear, Remove, Delete (of New'd
// values) and Destroy free everything nested in what they remove. A type
// that holds, through containers, a container of itself is refused
// (ErrNotPlainData): link such structures with Ptr.
//
// Every mutating call is crash-atomic: after a SIGKILL anywhere in it, and
// the recovery that follows (see mapped.Lane), the container holds the
// state before the call or after it, and no block leaks. An Append that
// fits the capacity and a String.Set that fits its storage publish with
// one store and take no lock; growth, insertion, removal and List calls
// run in a mapped.Lane, without the segment lock except to allocate or
// free. Containers are not safe for concurrent mutation (like Go maps and
// slices): guard them, across processes, with a lock in the segment.
//
// A container method called on a copy outside an open segment (a Go
// variable, a value copied out) panics with a message that says so; it
// never reads the wrong memory. Indexes out of range panic as a slice's
// do. These are the documented misuse panics. A container in a segment
// opened read-only returns mapped.ErrReadOnly from every mutating method,
// and a header whose words do not fit the segment is mapped.ErrCorrupt.
//
// # Synchronisation and queues
//
//	type Shared struct {
//	    Mu    objects.Mutex            // also RWMutex, Cond, Semaphore: plain values in the segment
//	    Ready objects.Cond
//	    Jobs  objects.Vector[int64]
//	}
//	sh, err := objects.FindOrConstruct(seg, "shared", Shared{})
//	sh.Ready.L.Set(&sh.Mu)             // once: the Cond's Mutex
//	if err := sh.Mu.Lock(); errors.Is(err, objects.ErrOwnerDied) {
//	    // held: the dead holder's unfinished container calls were rolled back
//	}
//	defer sh.Mu.Unlock()
//
//	q, err := objects.ConstructQueue(seg, "jobs", objects.QueueConfig{MaxMsgSize: 64, MaxMsgs: 1024})
//	err = q.Send(msg, prio)            // SendContext(ctx, ...), TrySend; blocks while full
//	n, prio, err := q.Receive(buf)     // ReceiveContext, TryReceive; into buf, no allocation
//
// Mutex, RWMutex, Cond and Semaphore live in the segment (a field of a
// value there, or named) and are shared by the goroutines of every process
// that maps it. They wait on futexes (no system call uncontended: a
// Mutex's Lock is a compare-and-swap and its Unlock a plain store, see
// Mutex; the others' are a compare-and-swap each). A lock is held by an open of
// the segment (a process), not a goroutine. They are robust: a process
// that dies holding a Mutex, or an RWMutex for writing, hands it to the
// next locker with ErrOwnerDied, after the dead process's lanes (its
// container calls cut short) were rolled back; waiters find the death
// within about 20 ms. A dead reader's read hold is released. A Cond's
// Wait returns its Mutex's ErrOwnerDied. A Semaphore reports the units a
// dead process held (Orphaned) rather than losing them silently. Unlock
// of a lock this open does not hold is ErrNotHeld. In a segment opened
// read-only they are mapped.ErrReadOnly.
//
// Queue is a bounded message queue in the segment, like Boost's
// message_queue: messages of at most MaxMsgSize bytes, at most MaxMsgs
// queued, higher priority first and first in first out within one; a
// longer message is ErrMsgSize. A process killed in Send leaves the whole
// message queued or none of it; killed in Receive, the message is still
// queued or consumed, never twice. With a file backing the messages
// survive restarts. Senders and receivers take separate Mutexes and work
// at once; see Queue for the layout.
//
// # Plain data only
//
// A value in a segment is shared by processes and outlives the process
// that wrote it, so it may hold no Go pointer of any kind: no pointer,
// slice, string, map, interface, chan, func or unsafe.Pointer, at any
// depth. Such a type is refused with ErrNotPlainData, naming the field
// path, for example "main.Config.Inner.Name (string)". Link objects with
// Ptr instead. The check runs once per type and is cached.
//
// # Type checks
//
// Each named object records its type's layout (size, alignment and,
// recursively, every field's kind, size and offset; names do not count)
// and its type name. Finding or destroying it as a type of another layout
// is ErrTypeMismatch, with both type names in the error. Two types of the
// same layout are interchangeable, as their memory means the same.
//
// # Crashes
//
// Construct, ConstructArray, ConstructArrayFunc, ConstructUnique and
// Destroy are each one crash-atomic step of the segment: after a SIGKILL
// anywhere in one, the name is either findable with its whole value or
// absent with its memory free (Destroy of a value holding containers
// removes the name and hands the value to a lane in one step, then frees
// what it owns; recovery finishes that). NewInto allocates and links in
// one step. Changes made through a pointer afterwards are plain memory
// writes; a multi-word update that must survive a crash whole needs its
// own protocol: the containers' methods, or a mapped.Lane.
//
// Pointers returned by this package point into the segment: valid while
// the object exists and the segment is open in this process. After Close
// they are dangling (reads see zeros; see mapped.Segment.Close), and
// through a segment opened read-only a write faults.
package objects
