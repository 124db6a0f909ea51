// Package hostile holds black-box tests that open damaged segment files
// through the public API only (mapped and objects) and check that damage
// never causes a fault, a hang, an untyped error or a silent lie: every
// call either answers exactly what the undamaged segment held, or returns
// one of the library's typed errors.
//
// The tests run each damaged file in a child process (see
// internal/proctest), so that a memory fault or a deadlock kills or stalls
// the child, where it is counted, and not the test binary.
//
// The package has no code of its own outside its tests.
package hostile
