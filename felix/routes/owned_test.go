package routes

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestBlackholeAndLearnedRoutes(t *testing.T) {
	b := BlackholeRoute(netip.MustParsePrefix("10.65.0.9/26"))
	if b.Dst.String() != "10.65.0.0/26" || b.Type != unix.RTN_BLACKHOLE || b.Protocol != ProtocolLocal || !IsTabbys(b) {
		t.Fatalf("blackhole = %+v", b)
	}
	one := LearnedRoute(netip.MustParsePrefix("10.66.0.0/26"), []netip.Addr{netip.MustParseAddr("192.168.1.2")})
	if one.Gw.String() != "192.168.1.2" || len(one.MultiPath) != 0 || one.Protocol != ProtocolLearned {
		t.Fatalf("learned = %+v", one)
	}
	two := LearnedRoute(netip.MustParsePrefix("10.66.0.0/26"),
		[]netip.Addr{netip.MustParseAddr("192.168.1.2"), netip.MustParseAddr("192.168.1.3")})
	if two.Gw != nil || len(two.MultiPath) != 2 || two.MultiPath[1].Gw.String() != "192.168.1.3" {
		t.Fatalf("ECMP = %+v", two)
	}
	if IsTabbys(netlink.Route{Protocol: unix.RTPROT_STATIC}) || IsTabbys(netlink.Route{Protocol: ProtocolLocal, Table: 100}) {
		t.Fatal("IsTabbys true for a route of another protocol or table")
	}
}

func TestPrefixConversions(t *testing.T) {
	for _, s := range []string{"10.65.0.0/26", "10.65.0.7/32", "fd00::/64", "fd00::5/128", "0.0.0.0/0"} {
		p := netip.MustParsePrefix(s)
		n := PrefixNet(p)
		got, ok := NetPrefix(n, family(p.Addr()))
		if !ok || got != p {
			t.Errorf("%s -> %s -> %s %v", s, n, got, ok)
		}
	}
	mapped := &net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(120, 128)}
	if got, ok := NetPrefix(mapped, netlink.FAMILY_V4); !ok || got.String() != "10.1.2.0/24" {
		t.Errorf("v4-mapped = %s %v", got, ok)
	}
	if got, ok := NetPrefix(nil, netlink.FAMILY_V6); !ok || got.String() != "::/0" {
		t.Errorf("nil v6 = %s", got)
	}
}
