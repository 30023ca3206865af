package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

var (
	guestMAC = net.HardwareAddr{0x02, 0x79, 0, 0, 0, 0x01}
	otherMAC = net.HardwareAddr{0x02, 0x79, 0, 0, 0, 0x02}
)

func testConfig() Config {
	c, err := Config{
		Interface:     "tap-test",
		MAC:           guestMAC,
		Addr:          netip.MustParseAddr("10.79.0.10"),
		DNS:           []netip.Addr{netip.MustParseAddr("10.79.0.53"), netip.MustParseAddr("10.79.0.54")},
		SearchDomains: []string{"ns1.svc.cluster.local", "cluster.local"},
		Hostname:      "guest-a",
		MTU:           1450,
	}.withDefaults()
	if err != nil {
		panic(err)
	}
	return c
}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatalf("new discover: %v", err)
	}
	return m
}

func request(t *testing.T, mac net.HardwareAddr, want net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(169, 254, 1, 1))),
	}, mods...)...)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	return m
}

// checkOptions verifies everything a guest is configured with.
func checkOptions(t *testing.T, m *dhcpv4.DHCPv4, lease bool) {
	t.Helper()
	gw := net.IPv4(169, 254, 1, 1).To4()
	if got := m.SubnetMask(); !bytes.Equal(got, net.CIDRMask(32, 32)) {
		t.Errorf("subnet mask = %v, want 255.255.255.255", got)
	}
	if got := m.Router(); len(got) != 1 || !got[0].Equal(gw) {
		t.Errorf("router = %v, want [169.254.1.1]", got)
	}
	if got := m.ServerIdentifier(); !got.Equal(gw) {
		t.Errorf("server identifier = %v, want 169.254.1.1", got)
	}
	want := "route to 169.254.1.1/32 via 0.0.0.0; route to 0.0.0.0/0 via 169.254.1.1"
	if got := dhcpv4.Routes(m.ClasslessStaticRoute()).String(); got != want {
		t.Errorf("option 121 = %s, want %s", got, want)
	}
	if got, want := m.GetOneOption(optionMSClasslessStaticRoute), m.GetOneOption(dhcpv4.OptionClasslessStaticRoute); !bytes.Equal(got, want) || len(got) == 0 {
		t.Errorf("option 249 = %x, want option 121's %x", got, want)
	}
	if got := m.DNS(); len(got) != 2 || !got[0].Equal(net.IPv4(10, 79, 0, 53)) || !got[1].Equal(net.IPv4(10, 79, 0, 54)) {
		t.Errorf("dns = %v", got)
	}
	if got := m.DomainSearch(); got == nil || !slices.Equal(got.Labels, []string{"ns1.svc.cluster.local", "cluster.local"}) {
		t.Errorf("domain search = %v", got)
	}
	if got := m.DomainName(); got != "ns1.svc.cluster.local" {
		t.Errorf("domain name = %q", got)
	}
	if got := m.HostName(); got != "guest-a" {
		t.Errorf("host name = %q", got)
	}
	if got := m.GetOneOption(dhcpv4.OptionInterfaceMTU); len(got) != 2 || binary.BigEndian.Uint16(got) != 1450 {
		t.Errorf("mtu option = %x", got)
	}
	if got := m.IPAddressLeaseTime(0); lease && got != 24*time.Hour || !lease && got != 0 {
		t.Errorf("lease time = %v (lease %v)", got, lease)
	}
	if lease && (m.IPAddressRenewalTime(0) != 12*time.Hour || m.IPAddressRebindingTime(0) != 21*time.Hour) {
		t.Errorf("t1/t2 = %v/%v", m.IPAddressRenewalTime(0), m.IPAddressRebindingTime(0))
	}
}

func TestRespondDiscoverOffersTheSlash32(t *testing.T) {
	cfg := testConfig()
	req := discover(t, guestMAC)
	r, out, reason := respond(cfg, guestMAC, req)
	if r == nil || out != outOffer {
		t.Fatalf("respond = %v, %v (%s), want an offer", r, out, reason)
	}
	if r.msg.MessageType() != dhcpv4.MessageTypeOffer || !r.msg.YourIPAddr.Equal(net.IPv4(10, 79, 0, 10)) {
		t.Fatalf("reply %s", r.msg.Summary())
	}
	if r.msg.TransactionID != req.TransactionID || !bytes.Equal(r.msg.ClientHWAddr, guestMAC) {
		t.Errorf("xid/chaddr not copied: %s", r.msg.Summary())
	}
	checkOptions(t, r.msg, true)
	// No broadcast flag: unicast to the offered address at the guest's MAC.
	if r.dstIP != cfg.Addr || !bytes.Equal(r.dstMAC, guestMAC) {
		t.Errorf("offer sent to %v at %v, want %v at %v", r.dstIP, r.dstMAC, cfg.Addr, guestMAC)
	}
}

func TestRespondBroadcastFlag(t *testing.T) {
	r, _, _ := respond(testConfig(), guestMAC, discover(t, guestMAC, dhcpv4.WithBroadcast(true)))
	if r == nil || r.dstIP != broadcastIP || !bytes.Equal(r.dstMAC, broadcastMAC) {
		t.Fatalf("reply to a broadcast-flag discover = %+v, want broadcast", r)
	}
}

func TestRespondRequest(t *testing.T) {
	cfg := testConfig()
	for _, tc := range []struct {
		name   string
		req    *dhcpv4.DHCPv4
		out    outcome
		dstIP  netip.Addr
		dstMAC net.HardwareAddr
	}{
		{"selecting own address", request(t, guestMAC, net.IPv4(10, 79, 0, 10)), outAck, cfg.Addr, guestMAC},
		{"another address", request(t, guestMAC, net.IPv4(10, 79, 0, 99)), outNak, broadcastIP, broadcastMAC},
		{"another server", request(t, guestMAC, net.IPv4(10, 79, 0, 10), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 79, 0, 1)))), outOtherServer, netip.Addr{}, nil},
		{"renewing own ciaddr", request(t, guestMAC, net.IPv4zero, dhcpv4.WithoutOption(dhcpv4.OptionRequestedIPAddress), dhcpv4.WithoutOption(dhcpv4.OptionServerIdentifier), dhcpv4.WithClientIP(net.IPv4(10, 79, 0, 10))), outAck, cfg.Addr, guestMAC},
		{"renewing other ciaddr", request(t, guestMAC, net.IPv4zero, dhcpv4.WithoutOption(dhcpv4.OptionRequestedIPAddress), dhcpv4.WithClientIP(net.IPv4(10, 79, 0, 11))), outNak, broadcastIP, broadcastMAC},
		{"nothing requested", request(t, guestMAC, net.IPv4zero, dhcpv4.WithoutOption(dhcpv4.OptionRequestedIPAddress)), outNak, broadcastIP, broadcastMAC},
		{"other mac", request(t, otherMAC, net.IPv4(10, 79, 0, 10)), outIgnored, netip.Addr{}, nil},
		{"relayed", request(t, guestMAC, net.IPv4(10, 79, 0, 10), dhcpv4.WithGatewayIP(net.IPv4(10, 79, 0, 1))), outIgnored, netip.Addr{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, out, reason := respond(cfg, guestMAC, tc.req)
			if out != tc.out {
				t.Fatalf("outcome = %v (%s), want %v", out, reason, tc.out)
			}
			if !tc.dstIP.IsValid() {
				if r != nil {
					t.Fatalf("got reply %s, want none", r.msg.Summary())
				}
				return
			}
			if r == nil {
				t.Fatal("no reply")
			}
			if r.dstIP != tc.dstIP || !bytes.Equal(r.dstMAC, tc.dstMAC) {
				t.Errorf("sent to %v at %v, want %v at %v", r.dstIP, r.dstMAC, tc.dstIP, tc.dstMAC)
			}
			switch out {
			case outAck:
				if r.msg.MessageType() != dhcpv4.MessageTypeAck || !r.msg.YourIPAddr.Equal(net.IPv4(10, 79, 0, 10)) {
					t.Errorf("ack %s", r.msg.Summary())
				}
				checkOptions(t, r.msg, true)
			case outNak:
				if r.msg.MessageType() != dhcpv4.MessageTypeNak || !r.msg.YourIPAddr.IsUnspecified() || len(r.msg.Router()) != 0 {
					t.Errorf("nak %s", r.msg.Summary())
				}
			}
		})
	}
}

func TestRespondIgnoresSpoofedEthernetSource(t *testing.T) {
	if r, out, _ := respond(testConfig(), otherMAC, discover(t, guestMAC)); r != nil || out != outIgnored {
		t.Fatalf("discover with chaddr of the guest from another MAC answered: %v", out)
	}
	if r, out, _ := respond(testConfig(), guestMAC, discover(t, otherMAC)); r != nil || out != outIgnored {
		t.Fatalf("discover for another MAC answered: %v", out)
	}
}

func TestRespondInformReleaseDecline(t *testing.T) {
	cfg := testConfig()
	inform, err := dhcpv4.NewInform(guestMAC, net.IPv4(10, 79, 0, 10))
	if err != nil {
		t.Fatal(err)
	}
	r, out, _ := respond(cfg, guestMAC, inform)
	if r == nil || out != outInform || r.msg.MessageType() != dhcpv4.MessageTypeAck || !r.msg.YourIPAddr.IsUnspecified() {
		t.Fatalf("inform answered with %v %v", out, r)
	}
	checkOptions(t, r.msg, false)
	if r.dstIP != cfg.Addr || !bytes.Equal(r.dstMAC, guestMAC) {
		t.Errorf("inform ack sent to %v at %v", r.dstIP, r.dstMAC)
	}
	stranger, _ := dhcpv4.NewInform(guestMAC, net.IPv4(10, 79, 0, 11))
	if r, out, _ := respond(cfg, guestMAC, stranger); r != nil || out != outIgnored {
		t.Errorf("inform from another address answered: %v", out)
	}
	for mt, want := range map[dhcpv4.MessageType]outcome{dhcpv4.MessageTypeRelease: outRelease, dhcpv4.MessageTypeDecline: outDecline} {
		m, _ := dhcpv4.New(dhcpv4.WithHwAddr(guestMAC), dhcpv4.WithMessageType(mt))
		if r, out, _ := respond(cfg, guestMAC, m); r != nil || out != want {
			t.Errorf("%v: reply %v outcome %v, want none and %v", mt, r, out, want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	c, err := Config{Interface: "tap0", MAC: guestMAC, Addr: netip.MustParseAddr("10.79.0.10")}.withDefaults()
	if err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	if c.Gateway != DefaultGateway || c.LeaseTime != DefaultLeaseTime {
		t.Errorf("defaults = %v %v", c.Gateway, c.LeaseTime)
	}
	_, err = Config{Interface: "a-name-that-is-too-long", Addr: netip.MustParseAddr("::1"), DNS: []netip.Addr{{}}, MTU: 10}.withDefaults()
	for _, want := range []string{"interface", "mac", "addr ::1", "dns", "mtu 10"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

func TestFrameAndFilter(t *testing.T) {
	payload := discover(t, guestMAC).ToBytes()
	frame := udp4(DefaultGateway, netip.MustParseAddr("10.79.0.10"), payload)
	if fold(sum(0, frame[:20])) != 0xffff {
		t.Errorf("ip header checksum does not verify")
	}
	u := frame[20:]
	if fold(sum(0, frame[12:20])+17+uint32(len(u))+sum(0, u)) != 0xffff {
		t.Errorf("udp checksum does not verify")
	}
	// The same packet turned into a request (ports swapped) must parse and
	// pass the filter; the reply itself (to port 68) must not.
	req := slices.Clone(frame)
	binary.BigEndian.PutUint16(req[20:], clientPort)
	binary.BigEndian.PutUint16(req[22:], serverPort)
	if got, ok := parseRequest(req); !ok || !bytes.Equal(got, payload) {
		t.Errorf("parseRequest did not return the payload")
	}
	if _, ok := parseRequest(frame); ok {
		t.Errorf("parseRequest accepted a packet to port 68")
	}
	raw, err := requestFilter()
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		insns[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("filter: %v", err)
	}
	frag := slices.Clone(req)
	frag[6] = 0x20 // more fragments
	tcp := slices.Clone(req)
	tcp[9] = 6
	for name, tc := range map[string]struct {
		pkt  []byte
		pass bool
	}{"request": {req, true}, "reply": {frame, false}, "fragment": {frag, false}, "tcp": {tcp, false}} {
		n, err := vm.Run(tc.pkt)
		if err != nil || (n > 0) != tc.pass {
			t.Errorf("%s: filter returned %d, %v; want pass=%v", name, n, err, tc.pass)
		}
	}
}
