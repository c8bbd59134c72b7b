// Package tailnet reads and writes tailnet state through the Tailscale API v2 and keeps a
// per-tailnet, in-memory copy of it for request paths.
//
// The pieces, each in its own file:
//   - API is the small interface the rest of the server uses; Client implements it on
//     tailscale.com/client/tailscale/v2 plus raw HTTP for service hosts and approval.
//   - Transport is the http.RoundTripper under every Client: it rate-limits itself, honours
//     429 and Retry-After, retries 5xx and non-JSON error bodies with jittered exponential
//     backoff within a bounded number of attempts and a bounded total time, and never lets a
//     credential into an error.
//   - CredentialSource yields OAuth client credentials (or, for development, an API key) per
//     TailscaleTailnet; DirSource reads them from a directory of files.
//   - Cache runs one poller per tailnet. Readers call Cache.Snapshot, which reads memory only;
//     Cache.Refresh coalesces with a poll in flight; Cache.Subscribe reports device online
//     flips and sync-status changes as soon as a poll detects them.
package tailnet
