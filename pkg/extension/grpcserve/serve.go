// Package grpcserve runs the extension's gRPC servers with the options and shutdown they share.
package grpcserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// ErrPlaintext is returned by NewServer for a server without credentials on a listener that
// other hosts can reach.
var ErrPlaintext = errors.New("refusing to serve plaintext gRPC on an address other than loopback: set the TLS certificate, key and client CA files")

// NewServer returns a gRPC server for l with keepalives (pings every 30s, clients may ping every
// 15s even without streams), creds and the given options. Without creds (nil) it serves
// plaintext, which only a loopback listener may do.
func NewServer(l net.Listener, creds credentials.TransportCredentials, opts ...grpc.ServerOption) (*grpc.Server, error) {
	base := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}
	if creds != nil {
		base = append(base, grpc.Creds(creds))
	} else if !IsLoopback(l.Addr()) {
		return nil, fmt.Errorf("%s: %w", l.Addr(), ErrPlaintext)
	}
	return grpc.NewServer(append(base, opts...)...), nil
}

// Serve registers the gRPC health service on srv (SERVING until shutdown), serves l until ctx
// is done, then stops: gracefully for at most grace, then closing what is still open.
func Serve(ctx context.Context, srv *grpc.Server, l net.Listener, grace time.Duration) error {
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
	}
	return nil
}
