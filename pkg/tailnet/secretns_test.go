package tailnet

import (
	"context"
	"errors"
	"testing"
)

// A tailnet naming a Secret outside Options.SecretNamespace, or an API URL in clear off
// loopback, gets no client and no credential is read (security review finding 9; stored objects
// from before admission refused them reach this path).
func TestSecurityCacheReadsCredentialsOnlyFromSecretNamespace(t *testing.T) {
	var read []SecretRef
	c := NewCache(Options{SecretNamespace: "tailscale-gateway-system",
		Credentials: CredentialSourceFunc(func(_ context.Context, ref SecretRef) (Credentials, error) {
			read = append(read, ref)
			return Credentials{ClientID: "id", ClientSecret: "secret"}, nil
		})})
	for _, cfg := range []Config{
		{Tailnet: "-", Secret: SecretRef{Namespace: "team-b", Name: "db-password"}},
		{Tailnet: "-", BaseURL: "http://collector.attacker.example", Secret: SecretRef{Namespace: "tailscale-gateway-system", Name: "ts-oauth"}},
	} {
		if _, err := c.newAPI(context.Background(), cfg); err == nil {
			t.Errorf("%+v: got a client", cfg)
		}
	}
	_, err := c.newAPI(context.Background(), Config{Tailnet: "-", Secret: SecretRef{Namespace: "team-b", Name: "x"}})
	if !errors.Is(err, ErrCredentialsNotFound) {
		t.Errorf("secret in another namespace: %v, want ErrCredentialsNotFound", err)
	}
	if len(read) != 0 {
		t.Fatalf("credentials read for %v", read)
	}
	if _, err := c.newAPI(context.Background(), Config{Tailnet: "-", BaseURL: "http://127.0.0.1:8080",
		Secret: SecretRef{Namespace: "tailscale-gateway-system", Name: "ts-oauth"}}); err != nil {
		t.Fatalf("installation namespace, loopback URL: %v", err)
	}
	if len(read) != 1 {
		t.Fatalf("credentials read %v, want the installation's Secret once", read)
	}
}
