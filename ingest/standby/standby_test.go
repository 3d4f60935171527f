package standby

import (
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/ingest"
)

func TestClaim(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Facts
		want ingest.Claim
		node string
	}{
		{"no partner, nobody publishes: publish", Facts{}, ingest.ClaimPublish, ""},
		{"another origin publishes: refuse", Facts{Elsewhere: "o3"}, ingest.ClaimRefuse, "o3"},
		{"another origin publishes, even with a partner", Facts{Partner: "a", PartnerAlive: true, Elsewhere: "o3"}, ingest.ClaimRefuse, "o3"},
		{"the partner publishes: hold", Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true}, ingest.ClaimHold, ""},
		{"the configured standby holds while the partner lives (dual publishing starts)",
			Facts{Partner: "a", Standby: true, PartnerAlive: true}, ingest.ClaimHold, ""},
		{"the preferred primary publishes while the standby does not",
			Facts{Partner: "b", PartnerAlive: true}, ingest.ClaimPublish, ""},
		{"a returning primary holds while its partner publishes",
			Facts{Partner: "b", PartnerAlive: true, PartnerPublishes: true, Replica: true}, ingest.ClaimHold, ""},
		{"the partner is gone and this node relays the stream: continue it (single publishing)",
			Facts{Partner: "a", Standby: true, Replica: true}, ingest.ClaimTakeOver, ""},
		{"the partner stopped publishing, replica here: continue it",
			Facts{Partner: "b", PartnerAlive: true, Replica: true}, ingest.ClaimTakeOver, ""},
		{"the partner is gone, no replica: publish", Facts{Partner: "a", Standby: true}, ingest.ClaimPublish, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, node := Claim(tc.f)
			if got != tc.want || node != tc.node {
				t.Fatalf("Claim(%+v) = %v %q, want %v %q", tc.f, got, node, tc.want, tc.node)
			}
		})
	}
}

func TestPromote(t *testing.T) {
	held := func(f Facts) Facts { f.Held = true; return f }
	for _, tc := range []struct {
		name string
		f    Facts
		want bool
	}{
		{"nothing held", Facts{Partner: "a"}, false},
		{"the partner died", held(Facts{Partner: "a", PartnerPublished: true}), true},
		{"the partner publishes", held(Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true}), false},
		{"the partner stopped publishing", held(Facts{Partner: "a", PartnerAlive: true, PartnerPublished: true}), true},
		{"the partner, alive, has not published yet", held(Facts{Partner: "a", PartnerAlive: true, HeldFor: time.Second}), false},
		{"... nor within Settle", held(Facts{Partner: "a", PartnerAlive: true, HeldFor: Settle}), true},
		{"another origin publishes it", held(Facts{Partner: "a", Elsewhere: "o3"}), false},
		{"no partner any more", held(Facts{}), true},
		{"the relay lost the partner for Cut", held(Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true,
			PartnerPublished: true, Replica: true, ReplicaCut: Cut}), true},
		{"... but not yet for Cut", held(Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true,
			PartnerPublished: true, Replica: true, ReplicaCut: Cut / 2}), false},
		{"cut for Cut, but this node was paused and woke less than Cut ago", held(Facts{Partner: "a", PartnerAlive: true,
			PartnerPublishes: true, PartnerPublished: true, Replica: true, ReplicaCut: 5 * time.Second, SincePause: Cut / 3}), false},
		{"... and still cut Cut after it woke", held(Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true,
			PartnerPublished: true, Replica: true, ReplicaCut: 5 * time.Second, SincePause: Cut}), true},
		{"a cut replica of a stream the partner never published here", held(Facts{Partner: "a", PartnerAlive: true,
			PartnerPublishes: true, Replica: true, ReplicaCut: time.Minute}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Promote(tc.f); got != tc.want {
				t.Fatalf("Promote(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}

func TestKeep(t *testing.T) {
	for _, tc := range []struct {
		f    Facts
		want bool
	}{
		{Facts{Partner: "a", PartnerAlive: true, PartnerPublishes: true}, true},
		{Facts{Partner: "a", PartnerAlive: true}, false},
		{Facts{Partner: "a", PartnerPublishes: true}, false},
		{Facts{PartnerAlive: true, PartnerPublishes: true}, false},
	} {
		if got := Keep(tc.f); got != tc.want {
			t.Errorf("Keep(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func TestYield(t *testing.T) {
	both := func(f Facts) Facts {
		f.Partner, f.PartnerAlive, f.PartnerPublishes, f.Publishes = "b", true, true, true
		return f
	}
	for _, tc := range []struct {
		name string
		f    Facts
		want bool
	}{
		{"nobody else publishes", Facts{Partner: "b", PartnerAlive: true, Publishes: true, FirstMSN: 3}, false},
		{"held here, not published", Facts{Partner: "b", PartnerAlive: true, PartnerPublishes: true, Held: true}, false},
		{"the partner took over while this origin was frozen", both(Facts{FirstMSN: 0, PartnerFirstMSN: 40}), true},
		{"this origin took over; the partner, back, yields", both(Facts{FirstMSN: 40, PartnerFirstMSN: 0}), false},
		{"both began the show at once: the configured standby yields", both(Facts{Standby: true}), true},
		{"... and the primary stays", both(Facts{}), false},
		{"the partner is gone", Facts{Partner: "b", PartnerPublishes: true, Publishes: true, PartnerFirstMSN: 9}, false},
		{"no partner", Facts{Publishes: true, PartnerPublishes: true, PartnerAlive: true, PartnerFirstMSN: 9}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Yield(tc.f); got != tc.want {
				t.Fatalf("Yield(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}
