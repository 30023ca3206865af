package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

// fakeInterfaces is a node with the interfaces autodetection must skip before the
// right ones.
var fakeInterfaces = []Interface{
	{Name: "lo", Up: true, Addrs: pfx("127.0.0.1/8")},
	{Name: "cali0123456789a", Up: true, Addrs: pfx("10.244.0.1/32")},
	{Name: "tap0", Up: true, Addrs: pfx("10.245.0.1/24")},
	{Name: "veth12", Up: true, Addrs: pfx("10.246.0.1/24")},
	{Name: "eth0", Up: false, Addrs: pfx("10.0.0.9/24")},
	{Name: "eth1", Up: true, Addrs: pfx("fe80::1/64", "169.254.3.4/16", "fd00::2/64", "192.168.1.7/24", "192.168.1.8/24")},
	{Name: "ens5", Up: true, Addrs: pfx("172.16.5.10/20")},
	{Name: "bond0", Up: true, Addrs: pfx("10.9.0.2/16")},
}

func detector(source netip.Addr) Detector {
	return Detector{
		Interfaces: func() ([]Interface, error) { return fakeInterfaces, nil },
		SourceFor: func(_ context.Context, dest string) (netip.Addr, error) {
			if dest == "unreachable" {
				return netip.Addr{}, errors.New("network is unreachable")
			}
			return source, nil
		},
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		method, wantIP, wantIf string
	}{
		{"first-found", "192.168.1.7/24", "eth1"},
		{"", "192.168.1.7/24", "eth1"},
		{"interface=ens.*", "172.16.5.10/20", "ens5"},
		{"interface=eth0|bond0", "10.9.0.2/16", "bond0"}, // eth0 is down
		{"interface=tap0", "10.245.0.1/24", "tap0"},      // asked for by name: not skipped
		{"skip-interface=eth.*", "172.16.5.10/20", "ens5"},
		{"cidr=10.0.0.0/8", "10.9.0.2/16", "bond0"},
		{"cidr=172.16.0.0/12,192.168.1.8/32", "192.168.1.8/24", "eth1"},
		{"can-reach=10.9.255.1", "10.9.0.2/16", "bond0"},
	} {
		m, err := ParseMethod(tc.method)
		if err != nil {
			t.Fatalf("%q: %v", tc.method, err)
		}
		d, err := detector(netip.MustParseAddr("10.9.0.2")).Detect(context.Background(), m)
		if err != nil {
			t.Errorf("%q: %v", tc.method, err)
			continue
		}
		if d.Prefix.String() != tc.wantIP || d.Interface != tc.wantIf {
			t.Errorf("%q: found %s on %s, want %s on %s", tc.method, d.Prefix, d.Interface, tc.wantIP, tc.wantIf)
		}
	}
}

func TestDetectFailures(t *testing.T) {
	for _, tc := range []struct {
		method, source, wantErr string
	}{
		{"interface=wlan.*", "", "no interface that is up has a global IPv4 address"},
		{"interface=eth0", "", "no interface that is up"}, // down
		{"cidr=10.100.0.0/16", "", "no interface that is up"},
		{"can-reach=unreachable", "", "network is unreachable"},
		{"can-reach=8.8.8.8", "10.77.0.1", "the source address 10.77.0.1 is on no interface"},
	} {
		m, err := ParseMethod(tc.method)
		if err != nil {
			t.Fatal(err)
		}
		src := netip.Addr{}
		if tc.source != "" {
			src = netip.MustParseAddr(tc.source)
		}
		_, err = detector(src).Detect(context.Background(), m)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: error %v, want %q", tc.method, err, tc.wantErr)
		}
	}
	d := Detector{Interfaces: func() ([]Interface, error) { return nil, errors.New("netlink down") }}
	if _, err := d.Detect(context.Background(), Method{Kind: "first-found"}); err == nil || !strings.Contains(err.Error(), "netlink down") {
		t.Errorf("interface list error: %v", err)
	}
}

func TestParseMethod(t *testing.T) {
	for _, bad := range []string{"interface=", "interface=(", "skip-interface", "can-reach=", "cidr=10.0.0.0", "cidr=fd00::/8", "first", "first-found=x"} {
		if _, err := ParseMethod(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A regular expression matches the whole name.
	m, err := ParseMethod("interface=eth")
	if err != nil || m.Re.MatchString("eth0") || !m.Re.MatchString("eth") {
		t.Errorf("interface=eth must match only eth: %v", err)
	}
}

// TestSystemInterfaces reads the real interfaces: loopback is always there.
func TestSystemInterfaces(t *testing.T) {
	ifs, err := SystemInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" {
			return
		}
	}
	t.Fatalf("no lo in %+v", ifs)
}
