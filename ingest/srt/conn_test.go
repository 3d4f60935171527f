package srt

import (
	"testing"
	"time"
)

// MPEG-TS ticks convert exactly, also past the 28 hours where ticks*1e9
// would overflow int64, and for the negative values a TimeDecoder yields
// for timestamps before its first one.
func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		ticks int64
		want  time.Duration
	}{
		{0, 0},
		{90000, time.Second},
		{3000, time.Second / 30},
		{-3000, -time.Second / 30},
		{1920, 21333333},
		{90000 * 86400 * 400, 400 * 24 * time.Hour},
		{90000*86400*400 + 1, 400*24*time.Hour + 11111},
	} {
		if got := ticks(tc.ticks); got != tc.want {
			t.Errorf("ticks(%d) = %d, want %d", tc.ticks, got, tc.want)
		}
	}
}
