package ingest

import (
	"log/slog"
	"time"
)

// Drops logs input a publisher sent that had to be dropped. It logs the
// first drop of every 5 s window with a count, so a broken encoder cannot
// flood the log. The zero value needs Log set; it is not safe for
// concurrent use.
type Drops struct {
	Log *slog.Logger

	n    int
	last time.Time
}

// Add records one dropped access unit or message.
func (d *Drops) Add(err error) {
	d.n++
	if now := time.Now(); now.Sub(d.last) >= 5*time.Second {
		d.Log.Warn("dropped bad input from publisher", "err", err, "dropped", d.n)
		d.last, d.n = now, 0
	}
}
