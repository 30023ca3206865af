package vmguest

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/tabbynet/tabby/test/netnode"
)

// testDHCP is a minimal DHCP responder on a tap, standing in for Tabby's: it offers
// every client addr/32 with option 121 routes 169.254.1.1/32 on-link and the default
// via 169.254.1.1 (and option 3 router 169.254.1.1 for clients without 121).
type testDHCP struct {
	srv  *server4.Server
	acks atomic.Int32
}

var gateway = net.IPv4(169, 254, 1, 1).To4()

// serveDHCP starts the responder on tap inside the node namespace; it stops with t.
func serveDHCP(t testing.TB, node *netnode.Node, tap string, addr net.IP) *testDHCP {
	t.Helper()
	d := &testDHCP{}
	handler := func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(addr),
			dhcpv4.WithServerIP(gateway),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gateway)),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(32, 32))),
			dhcpv4.WithOption(dhcpv4.OptRouter(gateway)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
			dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
				&dhcpv4.Route{Dest: &net.IPNet{IP: gateway, Mask: net.CIDRMask(32, 32)}, Router: net.IPv4zero},
				&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: gateway},
			)),
		)
		if err != nil {
			t.Logf("dhcp: reply: %v", err)
			return
		}
		// The client has no address yet: answer by broadcast on the tap.
		if _, err := conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}); err != nil {
			t.Logf("dhcp: send %s: %v", typ, err)
			return
		}
		if typ == dhcpv4.MessageTypeAck {
			d.acks.Add(1)
		}
	}
	// The socket is made inside the node namespace; it stays there.
	if err := node.Do(func() error {
		var err error
		d.srv, err = server4.NewServer(tap, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
		return err
	}); err != nil {
		t.Fatal(fmt.Errorf("dhcp server on %s: %w", tap, err))
	}
	go func() { _ = d.srv.Serve() }()
	t.Cleanup(func() { _ = d.srv.Close() })
	return d
}
