package ctl

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
)

// Version is tabbyctl's version, set at build time with
// -ldflags "-X github.com/tabbynet/tabby/ctl.Version=v1.2.3".
var Version = "dev"

func newVersionCmd(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version and the API server's version",
		Long: `Print tabbyctl's version and, unless --client, the gitVersion of the Kubernetes API
server the kubeconfig selects. An unreachable server is an error (exit 1) after the
client version is printed.`,
		Args: noArgs,
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only; do not contact the server")
	cmd.RunE = runE(func(*cobra.Command, []string) error {
		fmt.Fprintf(g.stdout, "Client Version: %s\n", Version)
		if clientOnly {
			return nil
		}
		var cfg *rest.Config
		if g.opts.Store == nil {
			c, err := g.restConfig()
			if err != nil {
				return err
			}
			cfg = c
		}
		v, err := g.opts.ServerVersion(cfg)
		if err != nil {
			return fmt.Errorf("server version: %w", err)
		}
		fmt.Fprintf(g.stdout, "Server Version: %s\n", v)
		return nil
	})
	return cmd
}
