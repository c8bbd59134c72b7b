// Package replicas lets several replicas of one installation share the live-status work on
// Kubernetes primitives:
//
//   - Membership: each replica holds a coordination.k8s.io Lease of its own, labelled with the
//     installation's group; the live members are the Leases renewed within their duration (as
//     observed locally, so clocks need not agree).
//   - Sharding: every TailscaleEndpoints belongs to one live member by rendezvous hashing of its
//     namespace/name over the members, so a member leaving moves only its own objects, and every
//     replica computes the same owner from the same Leases.
//   - Snapshots: the replica that polls the Tailscale API (the holder of the controllers' Lease)
//     publishes each tailnet snapshot under an etcd key of the registry's prefix; the others import
//     it, so the installation polls each tailnet once per interval.
package replicas
