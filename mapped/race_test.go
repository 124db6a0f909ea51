//go:build race

package mapped

// raceEnabled: built with -race, whose runtime reserves terabytes of
// address space (tests that limit it cannot run).
const raceEnabled = true
