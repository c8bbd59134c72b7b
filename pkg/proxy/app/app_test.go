package app

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
)

func TestFlagsAndValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--endpoints", "a,b"}, ""},
		{[]string{"--services-selector", "proxy=gw"}, ""},
		{nil, "nothing to serve"},
		{[]string{"--tailnet", "prod"}, ""},
		{[]string{"--tailnet", "prod", "--endpoints", "a"}, "not used with it"},
		{[]string{"--endpoints", "a", "--namespace", ""}, "--namespace is required"},
		{[]string{"--endpoints-selector", "a in (", "--state-dir", ""}, "label selector"},
	} {
		o := NewOptions()
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := o.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
		}
	}
	o := NewOptions()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	_ = fs.Parse([]string{"--endpoints", "a,b", "--tags", "tag:x,tag:y"})
	if len(o.Endpoints) != 2 || len(o.Tags) != 2 {
		t.Errorf("lists: %v %v", o.Endpoints, o.Tags)
	}
}

// /readyz answers 503 until the first configuration is applied and again once the proxy
// drains, so that the kubelet reports a draining pod not ready.
func TestReadyzFollowsTheProxy(t *testing.T) {
	ready, draining := make(chan struct{}), make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	stop, err := serveMetrics(addr, prometheus.NewRegistry(), ready, draining)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	status := func() int {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := status(); got != http.StatusServiceUnavailable {
		t.Errorf("before the first configuration: %d, want 503", got)
	}
	close(ready)
	if got := status(); got != http.StatusOK {
		t.Errorf("serving: %d, want 200", got)
	}
	close(draining)
	if got := status(); got != http.StatusServiceUnavailable {
		t.Errorf("draining: %d, want 503", got)
	}
}
