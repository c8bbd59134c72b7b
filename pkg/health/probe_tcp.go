package health

import (
	"context"
	"fmt"
)

// probeTCP is healthy iff a connection is established.
func probeTCP(ctx context.Context, e env, t Target) error {
	conn, err := e.dialer.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	_ = conn.Close()
	return nil
}
