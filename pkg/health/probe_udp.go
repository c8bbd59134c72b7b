package health

import (
	"context"
	"fmt"
)

// udpPayload is the datagram a UDP probe sends; echo-style services send something back.
var udpPayload = []byte("tailscale-gateway health probe\n")

// probeUDP sends one datagram and is healthy iff any datagram comes back before the deadline.
// An ICMP port-unreachable answer makes the read fail with "connection refused".
func probeUDP(ctx context.Context, e env, t Target) error {
	conn, err := dial(ctx, e, "udp", t.Address)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write(udpPayload); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var buf [512]byte
	if _, err := conn.Read(buf[:]); err != nil {
		return fmt.Errorf("no reply: %w", err)
	}
	return nil
}
