//go:build !race

package main

// raceEnabled is false: TestMain builds a plain relaymesh binary.
const raceEnabled = false
