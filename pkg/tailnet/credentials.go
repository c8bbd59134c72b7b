package tailnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Keys of the credential files, and of the Secret a TailscaleTailnet references.
const (
	KeyClientID     = "client_id"
	KeyClientSecret = "client_secret"
	// KeyAPIKey holds an API access token, for development only.
	KeyAPIKey = "api_key"
)

// SecretRef names the Secret (or the directory) holding a tailnet's credentials.
type SecretRef struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (r SecretRef) String() string { return r.Namespace + "/" + r.Name }

// Credentials authenticate to the Tailscale API: OAuth client credentials, or an API access
// token for development. String and GoString never print the secrets.
type Credentials struct {
	ClientID     string
	ClientSecret string
	APIKey       string
}

// Validate reports whether c holds a usable credential.
func (c Credentials) Validate() error {
	switch {
	case c.ClientID != "" && c.ClientSecret != "":
		return nil
	case c.APIKey != "":
		return nil
	case c.ClientID != "" || c.ClientSecret != "":
		return errors.New("OAuth credentials need both client_id and client_secret")
	}
	return errors.New("no credentials: need client_id and client_secret, or an API key")
}

// secrets lists the values that must never appear in errors or logs.
func (c Credentials) secrets() []string { return []string{c.ClientSecret, c.APIKey} }

// String prints the client ID but never a secret.
func (c Credentials) String() string {
	switch {
	case c.APIKey != "":
		return "Credentials{APIKey:" + redacted + "}"
	case c.ClientID != "":
		return "Credentials{ClientID:" + c.ClientID + ", ClientSecret:" + redacted + "}"
	}
	return "Credentials{}"
}

// GoString keeps %#v from printing the secrets.
func (c Credentials) GoString() string { return c.String() }

// CredentialSource yields the credentials of a tailnet. Implementations read a Kubernetes
// Secret, a directory (DirSource) or hold a fixed value (StaticSource). Errors must not contain
// the credentials; wrap ErrCredentialsNotFound when they do not exist.
type CredentialSource interface {
	Credentials(ctx context.Context, ref SecretRef) (Credentials, error)
}

// CredentialSourceFunc adapts a function to CredentialSource.
type CredentialSourceFunc func(ctx context.Context, ref SecretRef) (Credentials, error)

// Credentials implements CredentialSource.
func (f CredentialSourceFunc) Credentials(ctx context.Context, ref SecretRef) (Credentials, error) {
	return f(ctx, ref)
}

// StaticSource returns the same credentials for every tailnet, such as an API key for development.
type StaticSource Credentials

var _ CredentialSource = StaticSource{}

// Credentials implements CredentialSource.
func (s StaticSource) Credentials(context.Context, SecretRef) (Credentials, error) {
	c := Credentials(s)
	return c, c.Validate()
}

// String never prints the secrets.
func (s StaticSource) String() string { return Credentials(s).String() }

// GoString keeps %#v from printing the secrets.
func (s StaticSource) GoString() string { return s.String() }

// DirSource reads credentials from files laid out like mounted Secrets:
// <Dir>/<namespace>/<name>/client_id and client_secret, or <Dir>/<namespace>/<name>/api_key.
// Surrounding whitespace in the files is ignored. Files are read on every call, so rotated
// credentials are picked up when a client is next built.
type DirSource struct {
	Dir string
}

var _ CredentialSource = DirSource{}

// Credentials implements CredentialSource.
func (s DirSource) Credentials(_ context.Context, ref SecretRef) (Credentials, error) {
	if err := checkPathElement(ref.Namespace); err != nil {
		return Credentials{}, fmt.Errorf("credentials %s: namespace: %w", ref, err)
	}
	if err := checkPathElement(ref.Name); err != nil {
		return Credentials{}, fmt.Errorf("credentials %s: name: %w", ref, err)
	}
	dir := filepath.Join(s.Dir, ref.Namespace, ref.Name)
	var c Credentials
	var err error
	if c.ClientID, err = readKey(dir, KeyClientID); err != nil {
		return Credentials{}, err
	}
	if c.ClientSecret, err = readKey(dir, KeyClientSecret); err != nil {
		return Credentials{}, err
	}
	if c.ClientID == "" && c.ClientSecret == "" {
		if c.APIKey, err = readKey(dir, KeyAPIKey); err != nil {
			return Credentials{}, err
		}
	}
	if c == (Credentials{}) {
		return Credentials{}, fmt.Errorf("credentials %s: no %s/%s or %s files in %s: %w",
			ref, KeyClientID, KeyClientSecret, KeyAPIKey, dir, ErrCredentialsNotFound)
	}
	if err := c.Validate(); err != nil {
		return Credentials{}, fmt.Errorf("credentials %s in %s: %w", ref, dir, err)
	}
	return c, nil
}

// readKey returns the trimmed content of dir/key, or "" if the file does not exist.
func readKey(dir, key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, key))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		// *fs.PathError names the file, never its content.
		return "", fmt.Errorf("reading credentials: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// checkPathElement refuses names that would escape the directory.
func checkPathElement(s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, `/\`) {
		return fmt.Errorf("invalid path element %q", s)
	}
	return nil
}
