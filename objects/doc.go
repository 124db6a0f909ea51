// Package objects puts Go values in a mapstore segment: named objects and
// arrays, anonymous objects, one-per-type instances, and offset pointers,
// all type-checked.
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
// absent with its memory free. Changes made through a pointer afterwards
// are plain memory writes; a multi-word update that must survive a crash
// whole needs its own protocol (the containers and mutexes of later
// releases provide one).
//
// Pointers returned by this package point into the segment: valid while
// the object exists and the segment is open in this process. After Close
// they are dangling (reads see zeros; see mapped.Segment.Close), and
// through a segment opened read-only a write faults.
package objects
