// Command tabby-cni is Tabby's CNI plugin. It only wires the plugin logic (package cni)
// to the CNI skeleton and to Tabby's allocator; see docs/reference/cni.md.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	p := &cni.Plugin{
		NewIPAM: func(s datastore.Store, log *zap.Logger) cni.IPAM {
			return ipam.New(s, ipam.Options{Logger: log})
		},
	}
	skel.PluginMainFuncs(p.Funcs(), cni.VersionInfo, "CNI plugin tabby-cni "+Version)
}
