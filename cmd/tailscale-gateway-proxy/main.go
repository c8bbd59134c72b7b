// Command tailscale-gateway-proxy is a tsnet node that carries traffic between a cluster and a
// tailnet: egress listeners per tailnet endpoint of its TailscaleEndpoints, and Tailscale
// Services of its TailscaleServices balanced over their endpoints. See pkg/proxy.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/proxy/app"
	"github.com/tailscale-gateway/tailscale-gateway/pkg/version"
)

func main() {
	o := app.NewOptions()
	fs := pflag.NewFlagSet("tailscale-gateway-proxy", pflag.ExitOnError)
	o.AddFlags(fs)
	printVersion := fs.Bool("version", false, "Print the version and exit.")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:])
	if *printVersion {
		fmt.Println(version.String(fs.Name()))
		return
	}
	if err := o.Validate(); err != nil {
		klog.ErrorS(err, "Invalid flags")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := o.Run(ctx); err != nil {
		klog.ErrorS(err, "Proxy stopped")
		stop()
		os.Exit(1)
	}
}
