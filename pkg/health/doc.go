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
//   - gRPC: a plaintext grpc.health.v1.Health/Check call (HTTP/2 with prior knowledge) is
//     healthy iff it answers SERVING. The service name is Path without its leading "/"; "", "/"
//     and "/grpc.health.v1.Health/Check" ask for the server's overall health (service "").
//     Headers are sent as request metadata.
//
// TLS probes (HTTPS, TLS) offer only X25519 for key exchange, which makes a handshake about a
// third cheaper than Go's default hybrid post-quantum exchange. Scheduled TLS probes offer at
// most TLS 1.2 and resume the target's previous session: a resumed TLS 1.2 handshake needs no
// key exchange, whereas TLS 1.3 runs one even when resuming, and that halves the cost of a TLS
// probe. A target that fails a TLS 1.2 handshake is tried again at once with TLS 1.3 allowed,
// and offered TLS 1.3 from then on if that succeeds. One-off probes (Prober.Probe) offer
// TLS 1.3 as usual.
//
// Probes are started in batches: when the prober wakes for a due target, it also starts the
// targets due within the next Interval/20 (at most 50ms). Waking up is much of what probing
// costs, so a probe may start that much early; its next probe is scheduled from when it was
// due, so every target is still probed once per Interval on average.
//
// Every probe is bounded by Check.Timeout. Probe errors never carry header values: they may hold
// secrets such as "Authorization: Bearer ...", so any value a server reflects into an error is
// replaced with "[redacted]".
//
// Targets are dialled through Options.DialerFor, which lets addresses in the tailnet ranges
// (100.64.0.0/10, fd7a:115c:a1e0::/48) go through a tsnet node; see TailnetDialerFor.
package health
