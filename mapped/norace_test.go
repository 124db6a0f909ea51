//go:build !race

package mapped

// raceEnabled: built with -race (see race_test.go).
const raceEnabled = false
