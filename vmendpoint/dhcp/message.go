package dhcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"golang.org/x/net/bpf"
)

const (
	serverPort = 67
	clientPort = 68
	// optionMSClasslessStaticRoute is Microsoft's copy of option 121.
	optionMSClasslessStaticRoute = dhcpv4.GenericOptionCode(249)
)

var (
	broadcastIP  = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// outcome says what became of one request, for counting and logging.
type outcome int

const (
	outIgnored     outcome = iota // not ours: other MAC, relayed, malformed
	outOffer                      // DISCOVER answered
	outAck                        // REQUEST for our address answered
	outNak                        // REQUEST for another address refused
	outInform                     // INFORM answered
	outRelease                    // RELEASE noted
	outDecline                    // DECLINE noted
	outOtherServer                // REQUEST addressed to another server
)

// reply is one answer and where it goes.
type reply struct {
	msg    *dhcpv4.DHCPv4
	dstIP  netip.Addr
	dstMAC net.HardwareAddr
}

// respond decides the answer to req, which came in a frame from srcMAC (nil
// when unknown). A nil reply means no answer; reason says why when ignored.
func respond(cfg Config, srcMAC net.HardwareAddr, req *dhcpv4.DHCPv4) (*reply, outcome, string) {
	switch {
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return nil, outIgnored, "not a boot request"
	case req.HWType != iana.HWTypeEthernet || !bytes.Equal(req.ClientHWAddr, cfg.MAC):
		return nil, outIgnored, "client hardware address is not the guest's"
	case srcMAC != nil && !bytes.Equal(srcMAC, cfg.MAC):
		return nil, outIgnored, "ethernet source is not the guest's"
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return nil, outIgnored, "relayed request"
	}
	gw := net.IP(cfg.Gateway.AsSlice())
	addr := net.IP(cfg.Addr.AsSlice())
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return build(cfg, req, outOffer, dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), dhcpv4.WithYourIP(addr))
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(gw) {
			return nil, outOtherServer, "request names another server"
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if want != nil && want.Equal(addr) {
			return build(cfg, req, outAck, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(addr))
		}
		nak, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
			dhcpv4.WithOption(dhcpv4.OptMessage(fmt.Sprintf("address %v is not yours", want))))
		if err != nil {
			return nil, outIgnored, fmt.Sprintf("build nak: %v", err)
		}
		return &reply{msg: nak, dstIP: broadcastIP, dstMAC: broadcastMAC}, outNak, ""
	case dhcpv4.MessageTypeInform:
		if !req.ClientIPAddr.Equal(addr) {
			return nil, outIgnored, fmt.Sprintf("inform from %v, not the guest's address", req.ClientIPAddr)
		}
		return build(cfg, req, outInform, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck))
	case dhcpv4.MessageTypeRelease:
		return nil, outRelease, ""
	case dhcpv4.MessageTypeDecline:
		return nil, outDecline, ""
	default:
		return nil, outIgnored, fmt.Sprintf("message type %v", req.MessageType())
	}
}

// build makes an OFFER or ACK carrying the configured options and addresses it
// as RFC 2131 section 4.1 says for a client on the link.
func build(cfg Config, req *dhcpv4.DHCPv4, out outcome, mods ...dhcpv4.Modifier) (*reply, outcome, string) {
	mods = append(mods, options(cfg, out != outInform)...)
	msg, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, outIgnored, fmt.Sprintf("build reply: %v", err)
	}
	if out == outInform {
		// An INFORM gets no lease and no address (RFC 2131 section 4.3.5).
		msg.YourIPAddr = net.IPv4zero
	}
	r := &reply{msg: msg}
	switch {
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		r.dstIP, _ = netip.AddrFromSlice(req.ClientIPAddr.To4())
		r.dstMAC = req.ClientHWAddr
	case req.IsBroadcast():
		r.dstIP, r.dstMAC = broadcastIP, broadcastMAC
	default:
		r.dstIP, r.dstMAC = cfg.Addr, req.ClientHWAddr
	}
	return r, out, ""
}

// options are the configured DHCP options; lease adds lease time and T1/T2.
func options(cfg Config, lease bool) []dhcpv4.Modifier {
	gw := net.IP(cfg.Gateway.AsSlice())
	routes := dhcpv4.Routes{
		{Dest: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Router: net.IPv4zero},
		{Dest: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Router: gw},
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(32, 32))),
		dhcpv4.WithOption(dhcpv4.OptRouter(gw)),
		dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)),
		dhcpv4.WithGeneric(optionMSClasslessStaticRoute, routes.ToBytes()),
	}
	if lease {
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(cfg.LeaseTime)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(cfg.LeaseTime/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(cfg.LeaseTime*7/8)))
	}
	if len(cfg.DNS) > 0 {
		dns := make([]net.IP, 0, len(cfg.DNS))
		for _, d := range cfg.DNS {
			dns = append(dns, net.IP(d.AsSlice()))
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
	}
	if len(cfg.SearchDomains) > 0 {
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptDomainName(cfg.SearchDomains[0])),
			dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: cfg.SearchDomains})))
	}
	if cfg.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(cfg.Hostname)))
	}
	if cfg.MTU != 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(cfg.MTU))))
	}
	return mods
}

// requestFilter accepts unfragmented IPv4 UDP to port 67; a SOCK_DGRAM packet
// socket hands the filter the packet from its IP header on.
func requestFilter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1},                                // 0: IP protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: 6},         // 1: not UDP -> drop
		bpf.LoadAbsolute{Off: 6, Size: 2},                                // 2: flags + fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 4},      // 3: MF or offset -> drop
		bpf.LoadMemShift{Off: 0},                                         // 4: X = header length
		bpf.LoadIndirect{Off: 2, Size: 2},                                // 5: UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: serverPort, SkipTrue: 1}, // 6: not 67 -> drop
		bpf.RetConstant{Val: 0xffff},                                     // 7: accept
		bpf.RetConstant{Val: 0},                                          // 8: drop
	})
}

// parseRequest returns the UDP payload of an IPv4 packet to port 67.
func parseRequest(pkt []byte) ([]byte, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total < ihl+8 || total > len(pkt) || pkt[9] != 17 ||
		binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
		return nil, false
	}
	udp := pkt[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if binary.BigEndian.Uint16(udp[2:4]) != serverPort || ulen < 8 || ulen > len(udp) {
		return nil, false
	}
	return udp[8:ulen], true
}

// udp4 wraps payload in IPv4 and UDP headers from src:67 to dst:68.
func udp4(src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	b[1] = 0x10 // low delay, as DHCP servers traditionally send
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = 17
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ^fold(sum(0, b[:20])))

	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], serverPort)
	binary.BigEndian.PutUint16(u[2:], clientPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	pseudo := sum(0, b[12:20]) + 17 + uint32(len(u))
	c := ^fold(sum(pseudo, u))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

func sum(acc uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
