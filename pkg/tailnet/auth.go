package tailnet

import (
	"context"
	"net/http"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	tsclient "tailscale.com/client/tailscale/v2"
)

// authFor returns the library Auth for creds. Both kinds authenticate in the http.Client they
// build, so raw requests made with that client are authenticated the same way.
func authFor(creds Credentials) tsclient.Auth {
	if creds.ClientID != "" && creds.ClientSecret != "" {
		return &oauthAuth{clientID: creds.ClientID, clientSecret: creds.ClientSecret}
	}
	return apiKeyAuth{key: creds.APIKey}
}

// oauthAuth is the library's OAuth, except that token requests go through the same Transport
// (rate limit, retries, redaction) as API requests, and credentials are sent as form
// parameters as the Tailscale API documents.
type oauthAuth struct {
	clientID, clientSecret string
}

var _ tsclient.Auth = (*oauthAuth)(nil)

// HTTPClient implements tsclient.Auth.
func (a *oauthAuth) HTTPClient(orig *http.Client, baseURL string) *http.Client {
	cfg := clientcredentials.Config{
		ClientID:     a.clientID,
		ClientSecret: a.clientSecret,
		TokenURL:     strings.TrimSuffix(baseURL, "/") + tokenPath,
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	// The token source outlives any one request, so it gets its own background context; the
	// token request is safe to repeat, hence retryable although it is a POST.
	tokenHTTP := &http.Client{Transport: orig.Transport, Timeout: orig.Timeout}
	ctx := context.WithValue(withRetryable(context.Background()), oauth2.HTTPClient, tokenHTTP)
	return &http.Client{
		Transport: &oauth2.Transport{Base: orig.Transport, Source: cfg.TokenSource(ctx)},
		Timeout:   orig.Timeout,
	}
}

// apiKeyAuth sends an API access token as the Basic auth user, as the library does.
type apiKeyAuth struct{ key string }

var _ tsclient.Auth = apiKeyAuth{}

// HTTPClient implements tsclient.Auth.
func (a apiKeyAuth) HTTPClient(orig *http.Client, _ string) *http.Client {
	return &http.Client{
		Transport: basicAuthTransport{base: orig.Transport, user: a.key},
		Timeout:   orig.Timeout,
	}
}

type basicAuthTransport struct {
	base http.RoundTripper
	user string
}

// RoundTrip implements http.RoundTripper.
func (t basicAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.SetBasicAuth(t.user, "")
	return t.base.RoundTrip(r)
}
