package tailnetsim

import (
	"context"
	"fmt"
	"slices"
	"time"

	"tailscale.com/tsnet"
)

// TagNode sets node's ACL tags in the control server to tags (replacing any it had; none makes
// it an untagged, user-owned device again) and returns once every observer's netmap shows the
// node with exactly those tags, so that WhoIs on an observer answers with them.
func (t *Tailnet) TagNode(ctx context.Context, node *tsnet.Server, tags []string, observers ...*tsnet.Server) error {
	lc, err := node.LocalClient()
	if err != nil {
		return fmt.Errorf("tailnetsim: %w", err)
	}
	st, err := lc.StatusWithoutPeers(ctx)
	if err != nil {
		return fmt.Errorf("tailnetsim: node status: %w", err)
	}
	nk := st.Self.PublicKey
	n := t.control.Node(nk)
	if n == nil {
		return fmt.Errorf("tailnetsim: node %s is not known to the control server", st.Self.HostName)
	}
	n.Tags = slices.Clone(tags)
	t.control.UpdateNode(n)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for _, o := range observers {
			olc, err := o.LocalClient()
			if err != nil {
				return fmt.Errorf("tailnetsim: %w", err)
			}
			ost, err := olc.Status(ctx)
			if err != nil {
				done = false
				break
			}
			p, ok := ost.Peer[nk]
			var have []string
			if ok && p.Tags != nil {
				have = p.Tags.AsSlice()
			}
			if !ok || !slices.Equal(have, tags) {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tailnetsim: tagging %s: the observers do not see the tags yet: %w", st.Self.HostName, ctx.Err())
		case <-tick.C:
		}
	}
}
