// Package node starts the tsnet node of tailscale-gateway-proxy. The node's identity lives in
// its state directory, or in a state store such as a Secret (pkg/proxy/kubestate): the auth key
// is read only when no state is there yet, so a restart rejoins as the same node without a key.
package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
	"tailscale.com/ipn"
	"tailscale.com/tsnet"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/tsnode"
)

// stateFile is where tsnet keeps the node key and login state under its directory.
const stateFile = "tailscaled.state"

// Options configure the node.
type Options struct {
	// Dir is the state directory; it is created (0700) if missing.
	Dir string
	// Hostname in the tailnet.
	Hostname string
	// ControlURL is the coordination server; empty means Tailscale's.
	ControlURL string
	// AuthKey, or else the contents of AuthKeyFile, enrolls a node whose Dir holds no state.
	// Neither is read once the node is enrolled.
	AuthKey     string
	AuthKeyFile string
	// Tags are requested at enrollment ("tag:name"); hosting a Tailscale Service needs one.
	Tags []string
	// Port is the UDP port of WireGuard; 0 picks one.
	Port uint16
	// Store, when set, keeps the node's state instead of a file in Dir (which then holds only
	// tsnet's logs and caches); the node is enrolled when the store is not empty.
	Store StateStore
}

// StateStore is a state store that knows whether it holds a node's state yet.
type StateStore interface {
	ipn.StateStore
	// Empty reports whether no state has been written yet.
	Empty() bool
}

// Enrolled reports whether dir holds the state of a node that has joined a tailnet.
func Enrolled(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	return err == nil && fi.Size() > 0
}

// Start brings the node up and returns it once it is running. Close it to leave.
func Start(ctx context.Context, opts Options) (*tsnet.Server, error) {
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the state directory: %w", err)
	}
	tsnode.KeepOnLoopback(opts.ControlURL)
	key := ""
	enrolled := Enrolled(opts.Dir)
	if opts.Store != nil {
		enrolled = !opts.Store.Empty()
	}
	if !enrolled {
		var err error
		if key, err = authKey(opts); err != nil {
			return nil, err
		}
	}
	logger := klog.Background().WithName("tsnet")
	srv := &tsnet.Server{
		Dir:           opts.Dir,
		Hostname:      opts.Hostname,
		ControlURL:    opts.ControlURL,
		AuthKey:       key,
		AdvertiseTags: opts.Tags,
		Port:          opts.Port,
		Store:         opts.Store,
		Logf:          func(format string, args ...any) { logger.V(6).Info(fmt.Sprintf(format, args...)) },
		UserLogf:      func(format string, args ...any) { logger.V(2).Info(fmt.Sprintf(format, args...)) },
	}
	st, err := srv.Up(ctx)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("joining the tailnet: %w", err)
	}
	// A connection the node closed first (a backend that closed, through a VIP or a listener)
	// sits in TIME_WAIT, where the stack drops a new SYN from the same client port; a short
	// TIME_WAIT narrows that window (pkg/tsnode TimeWait).
	if err := tsnode.SetTimeWait(srv, tsnode.TimeWait); err != nil {
		klog.ErrorS(err, "Keeping the network stack's default TIME_WAIT")
	}
	klog.InfoS("Joined the tailnet", "hostname", opts.Hostname, "addresses", st.TailscaleIPs, "newNode", key != "")
	return srv, nil
}

// authKey returns the key that enrolls a new node. Its value never appears in errors.
func authKey(opts Options) (string, error) {
	if opts.AuthKey != "" {
		return opts.AuthKey, nil
	}
	if opts.AuthKeyFile == "" {
		return "", errors.New("the node is not enrolled yet and no auth key is configured")
	}
	b, err := os.ReadFile(opts.AuthKeyFile)
	if err != nil {
		return "", fmt.Errorf("reading the auth key file: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("the auth key file %s is empty", opts.AuthKeyFile)
	}
	return key, nil
}
