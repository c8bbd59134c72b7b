package replicas

import "hash/fnv"

// Owner returns the member that owns key by rendezvous (highest random weight) hashing: the
// member whose hash with key is highest. Every replica with the same members agrees, and removing
// a member moves only the keys it owned. "" when there are no members.
func Owner(members []string, key string) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		h := fnv.New64a()
		_, _ = h.Write([]byte(m))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(key))
		if s := mix(h.Sum64()); best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// mix is the finaliser of SplitMix64: FNV's low bits are weak for keys differing only at the end.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
