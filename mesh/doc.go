// Package mesh is relaymesh's control plane. It owns:
//
//   - membership: which nodes are alive, over hashicorp/memberlist (SWIM
//     gossip on one TCP+UDP port), encrypted and authenticated with a key
//     derived from the shared --cluster-key;
//   - the gossiped state of every node (NodeState): role, state, addresses,
//     load, capacity and the streams it holds with their viewer counts;
//   - network coordinates: a Vivaldi coordinate per node (serf/coordinate),
//     fed by memberlist's ping round-trip times, giving an RTT estimate
//     between any two nodes without measuring every pair;
//   - the choices made from that state: Rank orders the upstream candidates
//     for a stream, PickEdge chooses the edge for a viewer.
//
// mesh moves no media and knows nothing about HTTP, RTMP or QUIC: relay and
// edge consult it through small interfaces, and cmd wires this node's own
// state in through Config.Local.
//
// Gossip is kept small. The fixed-size fields travel in memberlist's node
// meta (under 512 bytes), so they ride on memberlist's own alive messages.
// Stream lists travel separately: a UDP broadcast of a node's list when it
// changes, re-broadcast by every node that learns something newer, and the
// stream lists of all alive nodes in memberlist's periodic TCP push/pull, so
// a joining node learns every holder during Join and a lost broadcast is
// repaired by the next push/pull.
package mesh
