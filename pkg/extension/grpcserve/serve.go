// Package grpcserve runs the extension's gRPC servers with the options and shutdown they share.
package grpcserve

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// NewServer returns a gRPC server with keepalives (pings every 30s, clients may ping every 15s
// even without streams) and the given options.
func NewServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}, opts...)...)
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
