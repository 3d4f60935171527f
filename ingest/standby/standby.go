// Package standby keeps a show on air when its origin is lost. Two origins
// form a pair: the standby (started with --standby-for PRIMARY) and its
// partner. For every stream the partner publishes, the standby keeps a hot
// replica; when the encoder publishes to both origins (dual publishing:
// ffmpeg's tee muxer, an encoder's backup URL), the standby also holds its
// own copy of the encoder, packaged aside. When the partner stops
// publishing a stream, because it died or its uplink dropped, the standby
// promotes: it continues the replica's playlist from its own copy, with the
// next media sequence number after a discontinuity, so every edge carries
// on with no gap in numbering. When the encoder publishes only to the
// primary and reconnects to the standby after losing it (single
// publishing), the standby continues the replica's playlist from the
// reconnected encoder.
//
// A partner that comes back does not take a stream back: while the other
// origin publishes it, a publish to the partner is held, and the pair has
// changed roles for that stream. A partner that was only cut off (frozen,
// or partitioned from the standby) and still publishes when it is back
// yields: of two partners publishing a name, the one whose publication
// began at the lower media sequence number was taken over, and sets its
// encoder aside as the new standby. One live publication per stream name
// across the mesh: an origin that is not the publisher's partner refuses
// the name.
//
// The decisions (Claim, Promote, Keep, Yield) are pure functions of Facts, tested from
// tables; Keeper applies them, every tick and at each publish.
package standby

import (
	"time"

	"github.com/relaymesh/relaymesh/ingest"
)

// Settle is how long a standby holds an encoder whose stream its partner,
// alive, has never published before it publishes the stream itself: at
// the start of a show the encoder reaches both origins at once, and the
// partner, the preferred primary, takes it.
const Settle = 2 * time.Second

// Facts is what this origin knows about one stream.
type Facts struct {
	// Partner is this origin's partner: the origin it stands by for, or
	// the one that stands by for it. "" when it has none.
	Partner string
	// Standby is true on the origin started with --standby-for: at the
	// start of a show it leaves the stream to its partner.
	Standby bool
	// PartnerAlive: the partner is a member of the mesh.
	PartnerAlive bool
	// PartnerPublishes: the partner publishes the stream, as gossiped.
	PartnerPublishes bool
	// PartnerPublished: the partner was seen publishing the stream while
	// this origin held it.
	PartnerPublished bool
	// PartnerFirstMSN: where the partner's publication began (its media
	// sequence number), when it publishes.
	PartnerFirstMSN uint64
	// Publishes: an encoder publishes the stream here (not held), since
	// FirstMSN.
	Publishes bool
	FirstMSN  uint64
	// Elsewhere names another origin, not the partner, that publishes the
	// stream, or is "".
	Elsewhere string
	// Replica: this node relays the stream from another.
	Replica bool
	// ReplicaCut is how long this node's replica has been without its
	// upstream (0 while it is fed).
	ReplicaCut time.Duration
	// SincePause is how long this node has run since it was last paused
	// (a SIGSTOP, a frozen VM, a starved process), or 0 if it has not
	// been: its connections time out on waking, which says nothing about
	// the partner.
	SincePause time.Duration
	// Held: this origin holds an encoder's copy of the stream, and for
	// how long.
	Held    bool
	HeldFor time.Duration
}

// Claim decides a publish of a stream at this origin: publish it; hold it
// as the standby while the partner publishes (or, on the configured
// standby, might: the encoder of a dual-published show reaches both at
// once); continue the replica this node holds; or refuse it, naming the
// origin that publishes it.
func Claim(f Facts) (ingest.Claim, string) {
	switch {
	case f.Elsewhere != "":
		return ingest.ClaimRefuse, f.Elsewhere
	case f.Partner != "" && f.PartnerAlive && (f.PartnerPublishes || f.Standby):
		return ingest.ClaimHold, ""
	case f.Replica:
		return ingest.ClaimTakeOver, ""
	}
	return ingest.ClaimPublish, ""
}

// Cut is how long a standby's replica may go without its upstream, the
// primary, before the standby takes over. The relay notices a dead peer
// within 0.7 s (QUIC keep-alives), where the mesh's failure detector takes
// two to three seconds, which players would spend stalled.
const Cut = 300 * time.Millisecond

// Promote decides whether an origin holding an encoder's copy of a stream
// starts publishing it: when its partner has died, or has stopped
// publishing the stream, or, alive, has not published it within Settle; or
// when its replica has been cut from the primary for Cut, counted from
// when this node was last paused.
func Promote(f Facts) bool {
	switch {
	case !f.Held || f.Elsewhere != "":
		return false
	case f.Partner == "" || !f.PartnerAlive:
		return true
	case f.Replica && f.PartnerPublished && cutSincePause(f) >= Cut:
		return true
	case f.PartnerPublishes:
		return false
	}
	return f.PartnerPublished || f.HeldFor >= Settle
}

// cutSincePause is how long the replica has been cut, counted from when
// this node was last paused.
func cutSincePause(f Facts) time.Duration {
	if f.SincePause > 0 {
		return min(f.ReplicaCut, f.SincePause)
	}
	return f.ReplicaCut
}

// Keep decides whether this origin keeps a hot replica of a stream: its
// partner publishes it.
func Keep(f Facts) bool {
	return f.Partner != "" && f.PartnerAlive && f.PartnerPublishes
}

// Yield decides whether an origin that publishes a stream sets its encoder
// aside because its partner publishes it too: both did, after one was cut
// off and the other took over. The publication that began later, at the
// higher media sequence number, is the takeover and stays; on a tie (both
// began the show at once) the configured standby yields.
func Yield(f Facts) bool {
	if !f.Publishes || f.Partner == "" || !f.PartnerAlive || !f.PartnerPublishes {
		return false
	}
	return f.PartnerFirstMSN > f.FirstMSN || (f.PartnerFirstMSN == f.FirstMSN && f.Standby)
}
