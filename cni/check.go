package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"github.com/vishvananda/netlink"
)

// check verifies that a pod is wired as ADD left it: the allocation held by the handle,
// the WorkloadEndpoint, the veth pair, the pod's address and routes, the host side's
// sysctls and route. Every difference is listed in one code-108 error.
func (p *Plugin) check(c *call) error {
	if err := c.k8s.require(); err != nil {
		return err
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	handle := ipam.PodHandle(c.k8s.Namespace, c.k8s.Pod, c.k8s.ContainerID)
	ctx, cancel := c.ctx()
	held, err := c.ipam.AddressesOf(ctx, handle)
	cancel()
	if err != nil {
		return fmt.Errorf("read the addresses of handle %s: %w", handle, err)
	}
	if len(held) == 0 {
		bad("IPAM handle %s holds no address", handle)
	}
	wepName := WEPName(c.node, c.k8s.Pod, c.args.IfName)
	ctx, cancel = c.ctx()
	wep, err := datastore.Get[*v1.WorkloadEndpoint](ctx, c.store, c.k8s.Namespace, wepName)
	cancel()
	if errors.Is(err, datastore.ErrNotFound) {
		bad("WorkloadEndpoint %s/%s is missing", c.k8s.Namespace, wepName)
		return checkFailed(problems)
	}
	if err != nil {
		return fmt.Errorf("read WorkloadEndpoint %s/%s: %w", c.k8s.Namespace, wepName, err)
	}
	addrs := wepAddrs(wep)
	if len(addrs) != 1 {
		bad("WorkloadEndpoint %s has ipNetworks %v, want one address", wepName, wep.Spec.IPNetworks)
		return checkFailed(problems)
	}
	ip := addrs[0]
	if len(held) > 0 && !slices.Contains(held, ip) {
		bad("WorkloadEndpoint address %s is not held by handle %s (it holds %v)", ip, handle, held)
	}
	if prev, err := prevResultIPs(c.conf); err != nil {
		return newErr(CodeInvalidConfig, "cannot parse prevResult", err)
	} else if prev != nil && !slices.Contains(prev, ip) {
		bad("prevResult has addresses %v, the WorkloadEndpoint %s", prev, ip)
	}
	pod, err := c.getPod()
	if err != nil {
		return err
	}
	hostName := VethName(c.k8s.Namespace, c.k8s.Pod)
	want := buildWEP(endpoint{Node: c.node, Pod: pod, ContainerID: c.k8s.ContainerID, IfName: c.args.IfName,
		HostIfName: hostName, MAC: wep.Spec.MAC, IP: ip})
	if d := wepDrift(wep, want); d != "" {
		bad("WorkloadEndpoint %s: %s", wepName, d)
	}

	podns, err := openPodNS(c.args.Netns)
	if err != nil {
		return newErr(CodeInvalidNetNS, "cannot open the pod's network namespace", err)
	}
	defer podns.Close()
	host, err := netlink.NewHandle()
	if err != nil {
		return newErr(CodeDataplane, "cannot open netlink", err)
	}
	defer host.Close()
	problems = append(problems, checkPodSide(podns, c.args.IfName, ip, wep.Spec.MAC)...)
	problems = append(problems, checkHostSide(host, podns, c.args.IfName, hostName, ip)...)
	return checkFailed(problems)
}

func checkFailed(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return newErr(CodeCheckFailed, "the pod's network is not as ADD left it", errors.New(strings.Join(problems, "; ")))
}

// checkPodSide checks the pod's interface, address and routes.
func checkPodSide(pod *podNS, ifName string, ip netip.Addr, mac string) []string {
	var out []string
	l, err := pod.h.LinkByName(ifName)
	if err != nil {
		return []string{fmt.Sprintf("%s is missing in the pod: %v", ifName, err)}
	}
	if l.Type() != "veth" {
		out = append(out, fmt.Sprintf("%s in the pod is a %s, not a veth", ifName, l.Type()))
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		out = append(out, ifName+" in the pod is down")
	}
	if mac != "" && l.Attrs().HardwareAddr.String() != mac {
		out = append(out, fmt.Sprintf("%s has MAC %s, the WorkloadEndpoint says %s", ifName, l.Attrs().HardwareAddr, mac))
	}
	addrs, err := pod.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return append(out, fmt.Sprintf("cannot list the addresses of %s: %v", ifName, err))
	}
	want := hostIPNet(ip).String()
	found := false
	for _, a := range addrs {
		if a.IPNet.String() == want {
			found = true
		}
	}
	if !found {
		out = append(out, fmt.Sprintf("%s lacks %s", ifName, want))
	}
	rs, err := pod.h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return append(out, fmt.Sprintf("cannot list the pod's routes: %v", err))
	}
	for _, w := range containerRoutes(l.Attrs().Index) {
		ok := false
		for _, r := range rs {
			if r.Dst != nil && w.Dst.String() == r.Dst.String() && r.Gw.Equal(w.Gw) && r.Scope == w.Scope {
				ok = true
			}
			if r.Dst == nil && w.Dst.String() == "0.0.0.0/0" && r.Gw.Equal(w.Gw) {
				ok = true
			}
		}
		if !ok {
			out = append(out, fmt.Sprintf("the pod lacks the route %s via %v dev %s", w.Dst, w.Gw, ifName))
		}
	}
	return out
}

// checkHostSide checks the host-side veth (the pod interface's peer), its sysctls and
// the route to the pod.
func checkHostSide(host *netlink.Handle, pod *podNS, ifName, hostName string, ip netip.Addr) []string {
	var out []string
	hl, err := host.LinkByName(hostName)
	if err != nil {
		return []string{fmt.Sprintf("host veth %s is missing: %v", hostName, err)}
	}
	if cl, err := pod.h.LinkByName(ifName); err == nil && cl.Attrs().ParentIndex != hl.Attrs().Index {
		out = append(out, fmt.Sprintf("%s in the pod is not paired with %s", ifName, hostName))
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		out = append(out, "host veth "+hostName+" is down")
	}
	for _, s := range hostSysctls {
		if v := readSysctl(s.path, hostName); v != s.value {
			out = append(out, fmt.Sprintf("sysctl %s is %q, want %q", fmt.Sprintf(s.path, hostName), v, s.value))
		}
	}
	ok, err := hostRouteOK(host, ip, hl.Attrs().Index)
	if err != nil {
		out = append(out, err.Error())
	} else if !ok {
		out = append(out, fmt.Sprintf("the host has no route %s dev %s proto tabby-local", hostIPNet(ip), hostName))
	}
	return out
}

// prevResultIPs returns the addresses of the net config's prevResult (nil if none).
func prevResultIPs(conf *NetConf) ([]netip.Addr, error) {
	if conf.RawPrevResult == nil {
		return nil, nil
	}
	pc := &types.PluginConf{CNIVersion: conf.CNIVersion, RawPrevResult: conf.RawPrevResult}
	if err := version.ParsePrevResult(pc); err != nil {
		return nil, err
	}
	r, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, c := range r.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}
