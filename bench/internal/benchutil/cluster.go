package benchutil

import (
	"context"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"k8s.io/client-go/discovery"
)

// Cluster is what StartCluster made: the control plane, a store over it and a fabric.
type Cluster struct {
	Env    *k8senv.Env
	Store  datastore.Store
	Fabric *fabric.Cluster
	// Version is the API server's (GitVersion), "?" when it could not be read.
	Version string
}

// StartCluster starts the real kube-apiserver with its directory under dir (see
// StartKubeIn) and a test/fabric cluster on it; opts needs its own Prefix, Subnet,
// Uplinks, BinDir, Cnitool and Dir (the rest is filled in). Both are torn down by cl.
func StartCluster(ctx context.Context, cl *netnode.Cleanup, dir string, opts fabric.Options) (*Cluster, error) {
	env, err := StartKubeIn(ctx, dir)
	if err != nil {
		return nil, err
	}
	cl.Add("stop the apiserver", env.Stop)
	c := &Cluster{Env: env, Version: "?"}
	if dc, err := discovery.NewDiscoveryClientForConfig(env.Config); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			c.Version = v.GitVersion
		}
	}
	if c.Store, err = datastore.NewKube(env.Config); err != nil {
		return nil, err
	}
	opts.Kubeconfig, opts.APIServer, opts.Store, opts.Logf = env.Kubeconfig, env.Config.Host, c.Store, cl.Logf
	if c.Fabric, err = fabric.New(ctx, opts); err != nil {
		return nil, err
	}
	cl.Add("tear down the fabric", c.Fabric.Close)
	return c, nil
}
