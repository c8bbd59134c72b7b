package health

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcHealthCheckMethod is the full method name of the standard health check; as a Path it
// names no service.
const grpcHealthCheckMethod = "/grpc.health.v1.Health/Check"

// grpcService is the health service name a Path asks for.
func grpcService(path string) string {
	if path == grpcHealthCheckMethod {
		return ""
	}
	return strings.TrimPrefix(path, "/")
}

// probeGRPC calls grpc.health.v1.Health/Check in plaintext on a connection of its own and is
// healthy iff the answer is SERVING.
func probeGRPC(ctx context.Context, e env, t Target) error {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return e.dialer.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithUserAgent(userAgent),
		// One attempt per probe: a retried call would hide failures.
		grpc.WithDisableRetry(),
		// Fixed windows turn off bandwidth estimation, whose pings a one-call connection wastes.
		grpc.WithInitialWindowSize(1 << 16),
		grpc.WithInitialConnWindowSize(1 << 16),
	}
	if authority := grpcAuthority(t.Check); authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	cc, err := grpc.NewClient("passthrough:///"+t.Address, opts...)
	if err != nil {
		return fmt.Errorf("grpc client: %w", err)
	}
	defer func() { _ = cc.Close() }()

	if md := grpcMetadata(t.Check.Headers); md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	service := grpcService(t.Check.Path)
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented:
		return fmt.Errorf("server does not implement grpc.health.v1.Health: %w", err)
	case codes.NotFound:
		return fmt.Errorf("health service %q unknown to the server: %w", service, err)
	default:
		return fmt.Errorf("grpc health check: %w", err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health service %q is %s", service, st)
	}
	return nil
}

// grpcAuthority is a "Host" entry of Headers, else ServerName, else empty (the address).
func grpcAuthority(c Check) string {
	for k, v := range c.Headers {
		if strings.EqualFold(k, "Host") {
			return v
		}
	}
	return c.ServerName
}

// grpcMetadata turns probe headers into request metadata; Host is carried by the authority.
func grpcMetadata(headers map[string]string) metadata.MD {
	if len(headers) == 0 {
		return nil
	}
	md := metadata.MD{}
	for k, v := range headers {
		if !strings.EqualFold(k, "Host") {
			md.Append(strings.ToLower(k), v)
		}
	}
	return md
}
