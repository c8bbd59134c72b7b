package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/apis/gateway/v1alpha1"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/controllers/collector"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/tailnet"
)

// LiveStatusOptions configure the live status: polling the Tailscale API and probing endpoints.
type LiveStatusOptions struct {
	Enabled bool
	// CredentialsDir holds OAuth credentials as <dir>/<namespace>/<name>/{client_id,client_secret};
	// without it credentials come from Secrets through the core API (cluster mode).
	CredentialsDir string
	// SecretNamespace is the only namespace TailscaleTailnets may take OAuth Secrets from: the
	// installation's (admission refuses others; the client constructor reads none elsewhere).
	SecretNamespace string
	PollInterval    time.Duration
	// APIRequestsPerSecond limits each tailnet's API client, retries included; negative: none.
	APIRequestsPerSecond float64
	// ControlURL is the coordination server of the prober's tsnet nodes; empty is Tailscale's.
	ControlURL          string
	JoinTailnets        bool
	NodeStateDir        string
	MaxConcurrentProbes int
	// APITransport tunes the API clients' retries and backoff (no flag: zero values take the
	// defaults of pkg/tailnet; tests scale time with it). Its RequestsPerSecond is ignored in
	// favour of APIRequestsPerSecond.
	APITransport tailnet.TransportOptions
}

// NewLiveStatusOptions returns the defaults: live status on, 30s polls, probes through tsnet.
func NewLiveStatusOptions() *LiveStatusOptions {
	return &LiveStatusOptions{Enabled: true, PollInterval: tailnet.DefaultInterval, JoinTailnets: true,
		APIRequestsPerSecond: tailnet.DefaultRequestsPerSecond, SecretNamespace: v1alpha1.DefaultOAuthSecretNamespace}
}

// AddFlags adds the live-status flags to fs.
func (o *LiveStatusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "live-status", o.Enabled, "Poll the Tailscale API and probe endpoints to show live status.")
	fs.StringVar(&o.CredentialsDir, "tailnet-credentials-dir", o.CredentialsDir,
		"Directory of OAuth credentials, <dir>/<namespace>/<secret-name>/client_id and client_secret, used instead of Secrets.")
	fs.StringVar(&o.SecretNamespace, "oauth-secret-namespace", o.SecretNamespace,
		"The only namespace TailscaleTailnets may take OAuth Secrets from (spec.oauthSecretNamespace): the installation's.")
	fs.DurationVar(&o.PollInterval, "tailnet-poll-interval", o.PollInterval, "Interval between polls of each tailnet's Tailscale API.")
	fs.Float64Var(&o.APIRequestsPerSecond, "tailnet-api-qps", o.APIRequestsPerSecond,
		"Requests per second each tailnet's Tailscale API client may send, retries included (negative: unlimited).")
	fs.StringVar(&o.ControlURL, "tailnet-control-url", o.ControlURL,
		"Coordination server of the tsnet nodes that carry probes (default: Tailscale's).")
	fs.BoolVar(&o.JoinTailnets, "join-tailnets", o.JoinTailnets,
		"Probe tailnet addresses through a tsnet node joined to each tailnet (otherwise through the host's network).")
	fs.StringVar(&o.NodeStateDir, "tsnet-state-dir", o.NodeStateDir, "State directory of the tsnet nodes (default: <data-dir>/tsnet).")
	fs.IntVar(&o.MaxConcurrentProbes, "max-concurrent-probes", o.MaxConcurrentProbes, "Bound on health probes in flight (0: default).")
}

// newCollector builds the collector. coreClient is the core API's client configuration in cluster
// mode (for Secrets); defaultStateDir holds tsnet state when --tsnet-state-dir is unset; rs, when
// set, shares the work with other replicas (polls while leading, probes its shard).
func (o *LiveStatusOptions) newCollector(coreClient *rest.Config, defaultStateDir string, rs *replicaSet) (*collector.Collector, error) {
	var creds tailnet.CredentialSource
	switch {
	case o.CredentialsDir != "":
		creds = tailnet.DirSource{Dir: o.CredentialsDir}
	case coreClient != nil:
		client, err := kubernetes.NewForConfig(coreClient)
		if err != nil {
			return nil, fmt.Errorf("creating core client: %w", err)
		}
		creds = secretSource{client}
	default:
		creds = tailnet.CredentialSourceFunc(func(context.Context, tailnet.SecretRef) (tailnet.Credentials, error) {
			return tailnet.Credentials{}, fmt.Errorf("no --tailnet-credentials-dir and no core API: %w", tailnet.ErrCredentialsNotFound)
		})
	}
	transport := o.APITransport
	transport.RequestsPerSecond = o.APIRequestsPerSecond
	cacheOpts := tailnet.Options{Interval: o.PollInterval, Credentials: creds, Transport: transport, SecretNamespace: o.SecretNamespace}
	var owns func(namespace, name string) bool
	if rs != nil {
		cacheOpts.Follower, cacheOpts.OnPolled, owns = true, rs.publish, rs.owns
	}
	opts := collector.Options{
		Tailnets:            tailnet.NewCache(cacheOpts),
		Owns:                owns,
		MaxConcurrentProbes: o.MaxConcurrentProbes,
		ControlURL:          o.ControlURL,
		NodeHostname:        "tailscale-gateway-prober",
	}
	if o.JoinTailnets {
		opts.NodeStateDir = o.NodeStateDir
		if opts.NodeStateDir == "" {
			opts.NodeStateDir = defaultStateDir
		}
		if err := os.MkdirAll(opts.NodeStateDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", opts.NodeStateDir, err)
		}
	}
	return collector.New(opts), nil
}

// secretSource reads OAuth credentials from Secrets (keys client_id and client_secret).
type secretSource struct {
	client kubernetes.Interface
}

func (s secretSource) Credentials(ctx context.Context, ref tailnet.SecretRef) (tailnet.Credentials, error) {
	if ref.Name == "" {
		return tailnet.Credentials{}, fmt.Errorf("spec.oauthSecretName is not set: %w", tailnet.ErrCredentialsNotFound)
	}
	secret, err := s.client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return tailnet.Credentials{}, fmt.Errorf("secret %s: %w", ref, tailnet.ErrCredentialsNotFound)
	}
	if err != nil {
		return tailnet.Credentials{}, fmt.Errorf("reading secret %s: %w", ref, err)
	}
	return tailnet.Credentials{
		ClientID:     string(secret.Data["client_id"]),
		ClientSecret: string(secret.Data["client_secret"]),
	}, nil
}

// defaultNodeStateDir is where tsnet state goes when neither flag names a place.
func defaultNodeStateDir(dataDir string) string {
	if dataDir != "" {
		return filepath.Join(dataDir, "tsnet")
	}
	return filepath.Join(os.TempDir(), "tailscale-gateway-tsnet")
}
