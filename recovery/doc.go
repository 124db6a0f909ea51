// Package recovery holds what a user needs to know about a segment's
// recovery: the [Report] that says what opening a segment found and did
// (an unclean shutdown, processes that died attached, operations rolled
// back, damaged header copies), the shutdown [State] a segment was found
// in, and the errors that say a segment cannot be used as it is.
//
// Get a report from an open segment:
//
//	seg, err := mapped.Open(file.Path("state.seg"), mapped.OpenOrCreate)
//	if err != nil { ... }
//	if rep := seg.RecoveryReport(); !rep.Clean() {
//		log.Print(rep)
//	}
//
// The machinery that writes and checks headers, tracks attached processes
// and replays undo records is internal to the module.
package recovery
