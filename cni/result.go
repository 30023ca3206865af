package cni

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// SupportedVersions are the CNI spec versions the plugin speaks; results are converted
// to the version of the net config.
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// VersionInfo is what VERSION reports.
var VersionInfo = version.PluginSupports(SupportedVersions...)

// GatewayIP is the link-local next hop every workload routes through; the host side of
// its veth answers ARP for it by proxy.
var GatewayIP = netip.MustParseAddr("169.254.1.1")

// attachment is what ADD made, for the result.
type attachment struct {
	HostIfName, HostMAC string
	IfName, MAC         string
	Netns               string
	IP                  netip.Addr
}

// buildResult is the ADD result in the newest format (types/100); printing converts it
// to the net config's version.
func buildResult(a attachment) *current.Result {
	hostMAC, contMAC := a.HostMAC, a.MAC
	bits := a.IP.BitLen()
	gw := net.IP(GatewayIP.AsSlice())
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.HostIfName, Mac: hostMAC},
			{Name: a.IfName, Mac: contMAC, Sandbox: a.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: net.IP(a.IP.AsSlice()), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  gw,
		}},
	}
}

// resultAs converts r to the given spec version.
func resultAs(r *current.Result, cniVersion string) (types.Result, error) {
	if cniVersion == "" {
		cniVersion = current.ImplementedSpecVersion
	}
	return r.GetAsVersion(cniVersion)
}
