package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host-side sysctls of a workload interface: answer ARP for 169.254.1.1 at once, and
// forward what the workload sends.
var hostSysctls = []struct{ path, value string }{
	{"net/ipv4/conf/%s/proxy_arp", "1"},
	{"net/ipv4/neigh/%s/proxy_delay", "0"},
	{"net/ipv4/conf/%s/forwarding", "1"},
}

// procSys is where sysctls are written; /proc/sys/net is the netns of the caller.
const procSys = "/proc/sys"

// podNS is a pod's network namespace and a netlink handle inside it; no thread ever
// switches namespaces.
type podNS struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

// openPodNS opens the namespace at path. errors.Is(err, os.ErrNotExist) when it is gone.
func openPodNS(path string) (*podNS, error) {
	if path == "" {
		return nil, fmt.Errorf("no network namespace given: %w", os.ErrNotExist)
	}
	n, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(n)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink in network namespace %s: %w", path, err)
	}
	return &podNS{ns: n, h: h}, nil
}

func (p *podNS) Close() {
	p.h.Close()
	p.ns.Close()
}

// vethSpec is the pair ADD makes.
type vethSpec struct {
	HostName, ContName string
	MTU                int
	IP                 netip.Addr
}

// createVeth makes the veth pair with the host side in the plugin's namespace and the
// container side in pod's. A stale host-side veth of the same name (an earlier sandbox
// of the same pod that was never deleted) is removed first; an interface of that name
// that is not a veth, or ContName already in the pod, is CodeInterfaceTaken.
func createVeth(host *netlink.Handle, pod *podNS, s vethSpec) (netlink.Link, error) {
	if l, err := host.LinkByName(s.HostName); err == nil {
		if l.Type() != "veth" {
			return nil, newErr(CodeInterfaceTaken, "host interface "+s.HostName+" exists and is not a veth",
				fmt.Errorf("interface %s is a %s", s.HostName, l.Type()))
		}
		if err := host.LinkDel(l); err != nil && !isNotFound(err) {
			return nil, newErr(CodeDataplane, "cannot remove the stale veth "+s.HostName, err)
		}
	}
	if _, err := pod.h.LinkByName(s.ContName); err == nil {
		return nil, newErr(CodeInterfaceTaken, "interface "+s.ContName+" already exists in the pod's network namespace", nil)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.HostName, MTU: s.MTU},
		PeerName:      s.ContName,
		PeerNamespace: netlink.NsFd(int(pod.ns)),
		PeerMTU:       uint32(s.MTU),
	}
	if err := host.LinkAdd(veth); err != nil {
		return nil, newErr(CodeDataplane, "cannot create the veth pair", fmt.Errorf("add veth %s <-> %s: %w", s.HostName, s.ContName, err))
	}
	l, err := host.LinkByName(s.HostName)
	if err != nil {
		_ = host.LinkDel(veth)
		return nil, newErr(CodeDataplane, "cannot find the new veth", err)
	}
	return l, nil
}

// configureHostSide sets the sysctls of the host side and brings it up.
func configureHostSide(host *netlink.Handle, l netlink.Link) error {
	name := l.Attrs().Name
	for _, s := range hostSysctls {
		p := filepath.Join(procSys, fmt.Sprintf(s.path, name))
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			return newErr(CodeDataplane, "cannot set sysctls on "+name, fmt.Errorf("write %s: %w", p, err))
		}
	}
	if err := host.LinkSetUp(l); err != nil {
		return newErr(CodeDataplane, "cannot bring "+name+" up", err)
	}
	return nil
}

// configureContainerSide brings the pod's interface up with ip/32, a link route to
// 169.254.1.1 and the default route through it; it returns the interface.
func configureContainerSide(pod *podNS, ifName string, ip netip.Addr) (netlink.Link, error) {
	l, err := pod.h.LinkByName(ifName)
	if err != nil {
		return nil, newErr(CodeDataplane, "cannot find "+ifName+" in the pod", err)
	}
	if err := pod.h.LinkSetUp(l); err != nil {
		return nil, newErr(CodeDataplane, "cannot bring "+ifName+" up in the pod", err)
	}
	addr := &netlink.Addr{IPNet: hostIPNet(ip)}
	if err := pod.h.AddrAdd(l, addr); err != nil {
		return nil, newErr(CodeDataplane, "cannot add "+addr.IPNet.String()+" to "+ifName, err)
	}
	for _, r := range containerRoutes(l.Attrs().Index) {
		if err := pod.h.RouteAdd(&r); err != nil {
			return nil, newErr(CodeDataplane, "cannot add a route in the pod", fmt.Errorf("route %s: %w", r.String(), err))
		}
	}
	return pod.h.LinkByIndex(l.Attrs().Index)
}

// containerRoutes are the pod's routes: 169.254.1.1/32 scope link, and default via
// 169.254.1.1 onlink.
func containerRoutes(linkIndex int) []netlink.Route {
	gw := net.IP(GatewayIP.AsSlice())
	return []netlink.Route{
		{LinkIndex: linkIndex, Dst: hostIPNet(GatewayIP), Scope: netlink.SCOPE_LINK},
		{LinkIndex: linkIndex, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Gw: gw, Flags: int(netlink.FLAG_ONLINK), Scope: netlink.SCOPE_UNIVERSE},
	}
}

// deleteHostVeth removes a host-side veth by name; a missing one is no error. Its
// routes go with it.
func deleteHostVeth(host *netlink.Handle, name string) error {
	l, err := host.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("%s is a %s, not a veth: left alone", name, l.Type())
	}
	if err := host.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// deletePodSide removes the pod's interface (and so its host-side peer); it returns the
// peer's index in the host namespace (0 if unknown). A missing interface is no error.
func deletePodSide(pod *podNS, ifName string) (int, error) {
	l, err := pod.h.LinkByName(ifName)
	if err != nil {
		if isNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("look up %s in the pod: %w", ifName, err)
	}
	if l.Type() != "veth" {
		return 0, fmt.Errorf("%s in the pod is a %s, not Tabby's veth: left alone", ifName, l.Type())
	}
	peer := l.Attrs().ParentIndex
	if err := pod.h.LinkDel(l); err != nil && !isNotFound(err) {
		return peer, fmt.Errorf("delete %s in the pod: %w", ifName, err)
	}
	return peer, nil
}

// hostRouteOK reports whether Tabby's /32 to ip goes through linkIndex.
func hostRouteOK(host *netlink.Handle, ip netip.Addr, linkIndex int) (bool, error) {
	rs, err := routes.Lookup(host, ip)
	if err != nil {
		return false, err
	}
	for _, r := range rs {
		if routes.IsWorkloadRoute(r, ip, linkIndex) {
			return true, nil
		}
	}
	return false, nil
}

func readSysctl(path, ifName string) string {
	b, err := os.ReadFile(filepath.Join(procSys, fmt.Sprintf(path, ifName)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func hostIPNet(ip netip.Addr) *net.IPNet {
	bits := ip.BitLen()
	return &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(bits, bits)}
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
