package steer

import "math"

// unit hashes a session and a key to a number in (0, 1), the same on
// every node and in every release: choices about a viewer must agree
// wherever they are made.
func unit(session, key string) float64 {
	// FNV-1a, then the splitmix64 finalizer for uniform high bits.
	h := uint64(14695981039346656037)
	for i := 0; i < len(session); i++ {
		h = (h ^ uint64(session[i])) * 1099511628211
	}
	h = (h ^ 0xff) * 1099511628211 // a separator no byte of a session equals
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return (float64(h>>11) + 0.5) / (1 << 53)
}

// rendezvous is the weighted rendezvous (highest random weight) score of
// a node for a session: the node with the highest score wins, and each
// wins with probability proportional to its weight.
func rendezvous(session, node string, weight float64) float64 {
	return -weight / math.Log(unit(session, node))
}
