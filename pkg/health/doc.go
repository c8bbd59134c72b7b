// Package health actively probes endpoints and keeps their health in memory.
//
// A Prober holds a set of Targets (replaced as a whole by Update), probes each one every
// Check.Interval (jittered) on a bounded pool of workers, folds the outcomes into a Status with
// healthy/unhealthy thresholds, and reports transitions to Healthy or Unhealthy through
// OnTransition. Readers (Result, Results) only read memory, so request paths can call them freely.
//
// What a probe checks, by Check.Type:
//
//   - HTTP, HTTPS: a GET of Path with Headers over HTTP/1.1 is healthy iff the response status
//     equals ExpectedStatus. Redirects are not followed. HTTPS does not verify the server's
//     certificate (tailnet endpoints commonly serve self-signed ones) and sends ServerName as SNI.
//   - TCP: healthy iff a connection is established.
//   - TLS: healthy iff a TCP connection is established and a TLS handshake completes. The
//     certificate is not verified; ServerName is sent as SNI.
//   - UDP: a small datagram is sent; healthy iff any datagram comes back within Timeout. UDP health
//     therefore means "an echo-style reply arrived": a service that does not answer arbitrary
//     datagrams is reported unhealthy. An ICMP port-unreachable answer surfaces as a read error
//     ("connection refused").
//   - gRPC: a plaintext grpc.health.v1.Health/Check call is healthy iff it answers SERVING. The
//     service name is Path without its leading "/"; "", "/" and "/grpc.health.v1.Health/Check" ask
//     for the server's overall health (service ""). Headers are sent as request metadata.
//
// TLS probes (HTTPS, TLS) offer only X25519 for key exchange, which makes a handshake about a
// third cheaper than Go's default hybrid post-quantum exchange, and scheduled HTTPS probes
// resume the target's previous TLS session.
//
// Every probe is bounded by Check.Timeout. Probe errors never carry header values: they may hold
// secrets such as "Authorization: Bearer ...", so any value a server reflects into an error is
// replaced with "[redacted]".
//
// Targets are dialled through Options.DialerFor, which lets addresses in the tailnet ranges
// (100.64.0.0/10, fd7a:115c:a1e0::/48) go through a tsnet node; see TailnetDialerFor.
package health
