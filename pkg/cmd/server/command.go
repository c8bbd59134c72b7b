package server

import (
	"context"
	"flag"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/tailscale-gateway/tailscale-gateway/pkg/version"
)

// NewCommand returns the tailscale-gateway-apiserver command, serving until ctx is done.
func NewCommand(ctx context.Context) *cobra.Command {
	o := NewOptions()
	var printVersion bool
	cmd := &cobra.Command{
		Use:          "tailscale-gateway-apiserver",
		Short:        "Serve gateway.tailscale.com/v1alpha1 as an aggregated Kubernetes API server",
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if printVersion {
				_, err := fmt.Fprintln(c.OutOrStdout(), version.String(c.Name()))
				return err
			}
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	cmd.SetContext(ctx)
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&printVersion, "version", false, "Print the version and exit.")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	cmd.Flags().AddGoFlagSet(klogFlags)
	return cmd
}
