// Package mapped is mapstore's segment: a region of POSIX shared memory or
// a file that several processes map at once, with an allocator, a name
// directory and handles inside it. It is untyped (bytes, offsets and names);
// package objects adds Go types on top.
//
// Open a segment over a backing:
//
//	seg, err := mapped.Open(shm.Named("MySharedMemory"), mapped.CreateOnly, mapped.WithSize(64<<10))
//	seg, err := mapped.Open(file.Path("state.seg"), mapped.OpenOrCreate, mapped.WithSize(1<<20))
//	defer seg.Close()
//
// # Memory, handles and names
//
// Allocate, AllocateAligned and Deallocate manage blocks inside the
// segment; Handle and Block convert between a block and a Handle, an offset
// that means the same in every process (ParseHandle and Handle.String carry
// it across a command line). AllocateInto and DeallocateFrom store or clear
// a block's handle in a word of the segment as part of the same crash-atomic
// step. CreateNamed, LookupNamed and RemoveNamed keep an untyped name
// directory; package objects builds typed objects on it. FreeMemory is
// exact, and CheckSanity walks every structure.
//
// Small blocks come from per-process caches without the segment lock: a
// writable open keeps, for each P of the Go runtime, a magazine of free
// cells per size class in the segment, and Allocate and Deallocate pop
// and push with the goroutine pinned to its P; cells move between the
// magazines and the heap in batches under the lock. Cached cells count as
// free in FreeMemory and AllMemoryDeallocated; an allocation that finds no
// space empties this process's magazines first; Close empties them, and a
// dead process's are given back by whoever recovers it. Segments made at
// most 512 KiB have none.
//
// Every other change runs under the segment lock (a futex word in the segment
// shared by all processes) and records the words it is about to change in
// an undo journal; the common small-block allocation and free write one
// intent record instead. If its process is killed at any instruction, the
// next process to want the lock finds the owner dead, takes the lock over
// and rolls the operation back; an Open that finds it first does the same.
// Both say what they did in RecoveryReport. An operation cut short by a
// panic in this process (a callback's, say) is rolled back and the lock
// released before the panic goes on.
//
// LookupNamed takes no lock: it reads optimistically and retries (then
// locks) if a writer took the lock meanwhile. CreateNamedAs,
// LookupNamedAs and RemoveNamedAs are the typed layer's fast paths: they
// compare the stored layout blob with the expected one in the same step
// and return only what that layer needs. A segment written by a build
// with another manager format (the directory's hash, index and record
// layout are part of it) is refused with ErrVersion before the open
// changes anything. SegmentAt finds the open
// segment holding an address, for values in a segment (objects.Ptr, the
// containers) that must find their segment, and Holds bounds what they
// read from it (Bound is the size Holds last saw, for a loop, in Go or
// assembly, that checks many offsets without a call: a range past it is
// not refused but asked of Holds).
//
// # Lanes: crash-atomic changes outside the segment lock
//
// A structure of the caller's in the segment (package objects' containers)
// changes without the segment lock, so that processes changing different
// structures never wait for each other. A change that one aligned 8-byte
// store publishes needs nothing more (write the data, then the word). A
// change of several words runs in a Lane, an undo and redo record in the
// manager area that belongs to the one operation that claimed it
// (BeginLane, or Lane.Begin into a Lane variable of the caller's, which
// hot paths use: it saves copying the Lane through memory): Save records bytes before they change, Allocate takes a
// block that an abort frees, and Free, Store, Move, Write and Drop (which
// frees the blocks the values of a Shape own) run once Commit makes the
// operation stand. If the process dies in the middle, whoever finds it
// dead (a writable Open, a takeover of the segment lock, a BeginLane that
// finds every lane taken or, at most every 50 ms, another process's lane
// claimed, or a call of Recover) rolls the operation back, or finishes it
// if it had committed, before anything else; a recovery cut short is done
// again. A supervisor that sees a worker exit calls Recover. Locks kept
// in the segment (objects.Mutex and the others) record their holder as an
// OwnerID and test it with OwnerAlive; the one that takes a lock over
// from a dead holder calls Recover before it goes on.
// Expand grows a large block in place when the pages after it are free;
// Prefault has a goroutine fault in the pages of a range about to be
// written, so that the writer does not wait for each first touch;
// PrefaultAhead does it for a block a writer fills while it runs, keeping
// ahead of the writer's progress word. A writable open (not a private
// copy) also keeps the 8 MiB past the furthest page it has taken from the
// page heap faulted in, within the segment's size.
// RemoveNamedDropping removes a name whose object owns blocks and frees
// them all, as one step that recovery finishes. Info.LockAcquisitions
// counts how often any process took the segment lock.
//
// # Modes, Close and damage
//
// OpenReadOnly maps the segment read-only and validates every read
// against writers (a write through a pointer it returned faults, as any
// write to read-only memory). OpenCopyOnWrite takes a private snapshot,
// copying every page at open; it is ErrBusy while writable opens are
// attached. Close waits for the calls in flight that hold the segment
// lock, and later calls are ErrClosed; pointers into the segment are
// dangling once it returns (the mapping is replaced by private zeros, and
// unmapped when the Segment is garbage).
//
// Nothing read from the segment is trusted: a value that would steer an
// access out of bounds, or a loop for ever, is ErrCorrupt, and once an
// operation finds the segment corrupt, later calls that would walk it are
// ErrCorrupt too. A read-only open of a damaged segment opens for
// inspection and says what is wrong in RecoveryReport.
//
// A new segment is built in an unnamed file and linked into place whole;
// an existing file is never formatted.
//
// # Growth
//
// Each process maps the segment's maximum size (WithMaxSize, 64 GiB by
// default) as address space, of which only Size bytes have pages behind
// them. Growing extends the backing with fallocate and ftruncate; every
// attached process sees the new pages at once, and the base address never
// moves, so Go pointers into the segment stay valid until Close. A full disk
// or tmpfs is ErrNoSpace, never a SIGBUS.
//
// # Crashes
//
// Each writable open holds a seat in the segment's attached-process table,
// kept alive by an OFD lock that the kernel releases when the process dies
// (immune to pid reuse and zombies); an open tests the liveness of the
// seats an occupied-seat mask names, not of the whole table. A segment
// is marked in use (header state attached) from the first change after it
// was closed cleanly until the last writable process closes it; that last
// Close flushes a file segment and marks it closed. An open that finds the
// segment in use with no live process records an unclean shutdown in
// RecoveryReport and recovers it (rolls back what was half done, checks
// the whole manager) before returning it. A process that dies before its
// first change leaves nothing to recover: the next open finds the segment
// still closed, lists the process in DeadProcesses and gives its seat back.
//
// # Durability (file backing)
//
// Flush makes everything written before it durable. The in-use mark is
// made durable lazily: opening a segment writes nothing to its header and
// syncs nothing, and an open that only reads and closes never syncs. The
// first change of an open (Allocate, AllocateAligned, AllocateInto,
// Deallocate, DeallocateFrom, CreateNamed, RemoveNamed, Grow, any
// allocation that grows the segment) or its first Flush writes the mark
// and syncs it (about 0.3 ms on the disks we measured) before it changes
// anything, unless another open did so already. So after a power loss,
// a segment whose allocator or name directory a change may have left half
// on disk is never mistaken for one closed cleanly: the open reports the
// unclean shutdown, that the machine restarted, and that writes after the
// last Flush may be lost, and checks everything.
//
// Writes through pointers and slices the segment handed out (an object
// found by name, a block, a value behind an objects.Ptr) are not changes
// the segment sees. Those made after the segment is marked in use are
// covered as above, and the last Close flushes them. Those made while it
// is still marked closed (an open that has only found things and written
// through what it found) reach the disk when the kernel writes the pages
// back, or at Flush; a power loss before then may lose them without the
// next open saying so, and Close does not flush them (it flushes only a
// segment marked in use). A program that writes through pointers and
// needs power losses reported calls Flush before those writes, which
// marks the segment in use; to make them durable, Flush after them. A
// process crash loses none of them: the page cache keeps them.
package mapped
