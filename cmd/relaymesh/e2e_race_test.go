//go:build race

package main

// raceEnabled makes TestMain build the relaymesh binary with -race too, so
// that a data race in the daemon fails the clean-exit assertion of the
// end-to-end tests (a race-enabled binary exits 66 after reporting one).
const raceEnabled = true
