package framework

import "github.com/tailscale-gateway/tailscale-gateway/test/pki"

// The environment's certificate authorities (package test/pki, shared with unit tests).
type (
	CA      = pki.CA
	CertKey = pki.CertKey
)

// NewCA and NewSigningKey are test/pki's.
var (
	NewCA         = pki.NewCA
	NewSigningKey = pki.NewSigningKey
)
