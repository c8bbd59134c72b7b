package tailnet

import (
	"slices"
	"time"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
)

// Config is how to reach one tailnet, from a TailscaleTailnet's spec.
type Config struct {
	// Tailnet is the tailnet's name in the API; "" or "-" selects the credentials' own.
	Tailnet string
	// BaseURL overrides DefaultBaseURL.
	BaseURL string
	// Secret names the credentials for the CredentialSource.
	Secret SecretRef
	// Tags are the tags given to devices and services the gateway creates.
	Tags []string
	// Interval overrides Options.Interval for this tailnet.
	Interval time.Duration
}

// ConfigFromSpec builds a Config from a TailscaleTailnet spec, applying the API's defaults.
func ConfigFromSpec(spec gateway.TailscaleTailnetSpec) Config {
	c := Config{
		Tailnet: spec.Tailnet,
		BaseURL: spec.APIBaseURL,
		Secret:  SecretRef{Namespace: spec.OAuthSecretNamespace, Name: spec.OAuthSecretName},
		Tags:    slices.Clone(spec.Tags),
	}
	if c.Tailnet == "" {
		c.Tailnet = gateway.DefaultTailnet
	}
	if c.Secret.Name != "" && c.Secret.Namespace == "" {
		c.Secret.Namespace = v1alpha1.DefaultOAuthSecretNamespace
	}
	return c
}

// sameEndpoint reports whether a and b reach the same tailnet with the same credentials, so
// that data polled with one is valid for the other.
func (c Config) sameEndpoint(o Config) bool {
	return normTailnet(c.Tailnet) == normTailnet(o.Tailnet) && c.BaseURL == o.BaseURL && c.Secret == o.Secret
}

func normTailnet(s string) string {
	if s == "" {
		return gateway.DefaultTailnet
	}
	return s
}
