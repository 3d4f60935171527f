package mesh

import (
	"bytes"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist's Delegate, EventDelegate and PingDelegate
// for a Mesh, so those callbacks stay off Mesh's own method set. Every
// input is decoded defensively: bad bytes are logged (rate-limited) and
// dropped.
type delegate struct{ m *Mesh }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.PingDelegate     = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
)

// NodeMeta returns the published fixed-size fields.
func (d delegate) NodeMeta(limit int) []byte {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.meta) <= limit {
		return m.meta
	}
	b, _ := encodeMeta(m.metaState, limit)
	return b
}

// NotifyMsg receives a stream-list broadcast. A list newer than the one we
// hold is stored and re-broadcast, so it spreads epidemically.
func (d delegate) NotifyMsg(b []byte) {
	m := d.m
	e, err := decodeStreams(b)
	if err != nil {
		m.dropped("stream-list message", "", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applyEntryLocked(e) {
		m.log.Debug("mesh peer streams", "peer", e.Node, "streams", len(e.Streams), "via", "broadcast")
		m.broadcastLocked(e.Node, bytes.Clone(b)) // memberlist reuses b
	}
}

// GetBroadcasts hands memberlist the queued stream-list messages.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.m.queue.GetBroadcasts(overhead, limit)
	bs := &d.m.bstats
	bs.rooms.Add(1)
	bs.sent.Add(uint64(len(msgs)))
	for _, b := range msgs {
		bs.bytes.Add(uint64(len(b)))
	}
	return msgs
}

// LocalState returns the stream lists of this node and every alive peer
// whose list we know, for push/pull.
func (d delegate) LocalState(join bool) []byte {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	entries := make([]streamEntry, 0, len(m.peers)+1)
	entries = append(entries, streamEntry{Node: m.name, Seq: m.seq, Streams: m.pubStr})
	for name, p := range m.peers {
		if p.hasStreams {
			entries = append(entries, streamEntry{Node: name, Seq: p.seq, Streams: p.state.Streams})
		}
	}
	return encodeState(entries)
}

// MergeRemoteState merges a peer's push/pull state: newer lists of alive
// peers win. (memberlist merges membership first, so nodes introduced by
// the same push/pull are already known.)
func (d delegate) MergeRemoteState(b []byte, join bool) {
	m := d.m
	entries, err := decodeState(b)
	if err != nil {
		m.dropped("push/pull state", "", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		if m.applyEntryLocked(e) {
			m.log.Debug("mesh peer streams", "peer", e.Node, "streams", len(e.Streams), "via", "push/pull", "join", join)
		}
	}
}

// NotifyJoin is called (with memberlist's node lock held) when a node
// becomes alive.
func (d delegate) NotifyJoin(n *memberlist.Node) {
	m := d.m
	if n.Name == m.name {
		return
	}
	s := d.decodeMeta(n)
	m.mu.Lock()
	p := m.peers[n.Name]
	if p == nil {
		p = &peer{}
		m.peers[n.Name] = p
	}
	s.Streams = p.state.Streams
	s.Heard = time.Now()
	p.state = s
	m.members.Store(int64(len(m.peers) + 1))
	m.mu.Unlock()
	m.log.Info("mesh peer joined", "peer", n.Name, "addr", n.Address(),
		"role", s.Role, "state", s.State, "region", s.Region)
}

// NotifyUpdate is called when a node's meta changes.
func (d delegate) NotifyUpdate(n *memberlist.Node) {
	m := d.m
	if n.Name == m.name {
		return
	}
	s := d.decodeMeta(n)
	m.mu.Lock()
	p := m.peers[n.Name]
	if p == nil {
		m.mu.Unlock()
		return
	}
	old := p.state
	s.Streams = old.Streams
	s.Heard = time.Now()
	p.state = s
	m.mu.Unlock()
	if !sameIdentity(old, s) {
		m.log.Info("mesh peer changed", "peer", n.Name, "role", s.Role, "state", s.State,
			"region", s.Region, "http", s.HTTPAddr, "relay", s.RelayAddr, "public_url", s.PublicURL, "capacity", s.Capacity)
	}
}

// NotifyLeave is called when a node leaves or is declared dead.
func (d delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	if n.Name == m.name {
		return
	}
	m.mu.Lock()
	_, known := m.peers[n.Name]
	delete(m.peers, n.Name)
	m.members.Store(int64(len(m.peers) + 1))
	m.mu.Unlock()
	m.vivaldi.ForgetNode(n.Name)
	if !known {
		return
	}
	// memberlist v0.7.0 does not tell a clean leave from a failure here
	// (it never sets Node.State), so the line says neither.
	m.log.Info("mesh peer gone", "peer", n.Name)
}

func (d delegate) decodeMeta(n *memberlist.Node) NodeState {
	s, err := decodeMeta(n.Meta)
	if err != nil {
		d.m.dropped("node meta", n.Name, err)
		s = NodeState{} // listed by name only until it gossips meta we understand
	}
	s.Name = n.Name
	return s
}

// AckPayload sends our Vivaldi coordinate with every ping ack.
func (d delegate) AckPayload() []byte {
	return encodeCoord(d.m.vivaldi.GetCoordinate())
}

// NotifyPingComplete feeds a measured RTT and the peer's coordinate to
// Vivaldi.
func (d delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	m := d.m
	if other == nil || other.Name == m.name || len(payload) == 0 {
		return
	}
	c, err := decodeCoord(payload)
	if err != nil {
		m.dropped("coordinate", other.Name, err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[other.Name]
	if p == nil {
		return // not (or no longer) alive: keep Vivaldi's per-node state bounded
	}
	if _, err := m.vivaldi.Update(other.Name, c, rtt); err != nil {
		m.dropped("coordinate", other.Name, err)
		return
	}
	p.coord = c
}

// NotifyConflict is called when two nodes claim the same name; memberlist
// keeps the first. Node names must be unique: say so loudly, unless the
// first is a node that failed and the second its restart, which the mesh
// admits once it has declared the first dead (reclaimDead).
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.mu.Lock()
	alive := d.m.peers[existing.Name] != nil
	d.m.mu.Unlock()
	ok, suppressed := d.m.bad.Allow()
	switch {
	case !ok:
	case !alive:
		d.m.log.Info("a failed node is back on a new address; it is admitted once the mesh has declared the old one dead",
			"peer", existing.Name, "addr", other.Address(), "old_addr", existing.Address(), "suppressed", suppressed)
	default:
		d.m.log.Error("two mesh nodes use the same --node-name; the second is ignored until it is renamed",
			"peer", existing.Name, "addr", existing.Address(), "other_addr", other.Address(), "suppressed", suppressed)
	}
}
