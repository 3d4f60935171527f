package wire

import (
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

// Conversions between the relay stream model and wire messages. Byte
// slices are shared, not copied: relay values are immutable once
// published, and decoded messages own freshly allocated frame payloads.

// InitFrom converts a relay init segment; nil gives the zero Init.
func InitFrom(in *relay.Init) Init {
	if in == nil {
		return Init{}
	}
	return Init{ID: in.ID, Codecs: in.Codecs, Width: in.Width, Height: in.Height, FrameRate: in.FrameRate, Data: in.Data}
}

// Relay converts in to a relay init segment.
func (in Init) Relay() *relay.Init {
	return &relay.Init{ID: in.ID, Data: in.Data, Codecs: in.Codecs, Width: in.Width, Height: in.Height, FrameRate: in.FrameRate}
}

// PartFrom converts a relay part; nil gives the zero Part.
func PartFrom(p *relay.Part) Part {
	if p == nil {
		return Part{}
	}
	return Part{N: p.N, Duration: p.Duration, Independent: p.Independent, Data: p.Data}
}

// Relay converts p to a relay part.
func (p Part) Relay() *relay.Part {
	return &relay.Part{N: p.N, Duration: p.Duration, Independent: p.Independent, Data: p.Data}
}

// SegmentStartFrom gives the SegmentStart that opens seg's stream.
func SegmentStartFrom(seg *relay.Segment) SegmentStart {
	s := SegmentStart{MSN: seg.MSN, Start: seg.Start, Discontinuity: seg.Discontinuity}
	if seg.Init != nil {
		s.InitID = seg.Init.ID
	}
	return s
}

// Header gives the relay.SegmentHeader for s, with init looked up by the
// caller from the Catalogs received (nil when it is unknown).
func (s SegmentStart) Header(init *relay.Init) relay.SegmentHeader {
	return relay.SegmentHeader{Start: s.Start, Discontinuity: s.Discontinuity, Init: init}
}

// CatalogFrom describes snap, a snapshot of st, for a subscriber that will
// receive all of snap's segments: each distinct init the window uses,
// oldest first. relay's whole-second target duration becomes a Duration.
func CatalogFrom(st *relay.Stream, snap *relay.Snapshot) Catalog {
	c := Catalog{
		Stream:         st.Name,
		PartTarget:     st.PartTarget,
		TargetDuration: time.Duration(snap.TargetDuration) * time.Second,
		DiscSeq:        snap.DiscSeq,
		Live:           snap.Live,
		NextPart:       snap.NextPart,
	}
	for _, seg := range snap.Segments {
		if seg.Init == nil || c.hasInit(seg.Init.ID) {
			continue
		}
		c.Inits = append(c.Inits, InitFrom(seg.Init))
	}
	return c
}

func (c *Catalog) hasInit(id uint64) bool {
	for i := range c.Inits {
		if c.Inits[i].ID == id {
			return true
		}
	}
	return false
}

// TargetSeconds gives TargetDuration in the whole seconds relay counts in,
// rounded up.
func (c Catalog) TargetSeconds() int { return durationSeconds(c.TargetDuration) }

// StreamStateFrom reports snap's state.
func StreamStateFrom(snap *relay.Snapshot) StreamState {
	return StreamState{
		Live:           snap.Live && !snap.Gone && !snap.Ended,
		Gone:           snap.Gone,
		Ended:          snap.Ended,
		TargetDuration: time.Duration(snap.TargetDuration) * time.Second,
		DiscSeq:        snap.DiscSeq,
	}
}

// TargetSeconds gives TargetDuration in whole seconds, rounded up.
func (s StreamState) TargetSeconds() int { return durationSeconds(s.TargetDuration) }

func durationSeconds(d time.Duration) int {
	n := d / time.Second
	if d%time.Second > 0 {
		n++
	}
	return int(n)
}
