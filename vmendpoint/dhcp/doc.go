// Package dhcp serves DHCPv4 on the tap of each libvirt guest, so that a VM is
// configured exactly like a pod: its one /32 from Tabby's IPAM, a default route
// via 169.254.1.1 that is on-link, and DNS settings from config.
//
// It owns the DHCP sockets on the taps and nothing else: it does not create,
// address or route the tap (felix's reconcilers write the /32 route and turn on
// proxy ARP), and ARP anti-spoofing is done by the eBPF programs. It imports
// only the standard library, github.com/insomniacslk/dhcp (messages and the
// library's UDP socket), github.com/mdlayher/packet, golang.org/x/net/bpf,
// golang.org/x/sys, vishvananda/netns and zap; nothing of ours.
//
// # What is offered
//
// A Server answers one guest MAC on one interface and offers exactly
// Config.Addr with subnet mask 255.255.255.255, router 169.254.1.1 (option 3),
// classless static routes (option 121, and the same bytes as Microsoft's
// option 249) "169.254.1.1/32 on-link" then "0.0.0.0/0 via 169.254.1.1", DNS
// servers (6), domain name (15, the first search domain), domain search (119),
// host name (12), interface MTU (26, when set), lease time (51) with T1/T2
// (58/59), and server identifier 169.254.1.1 (54). A client that asks for
// option 121 installs those routes and ignores option 3 (RFC 3442); one that
// ignores option 121 still gets router 169.254.1.1, and must reach it on-link
// itself: the first route of option 121 is there to say so.
//
// DISCOVER gets OFFER; REQUEST for Config.Addr gets ACK, a REQUEST for any
// other address gets NAK, and a REQUEST naming another server identifier is
// ignored (the client chose someone else). INFORM from the guest's own address
// gets an ACK with options but no lease. RELEASE is logged (the address stays
// the guest's: it belongs to the workload endpoint, not to a lease). DECLINE is
// logged as a warning: the guest saw another host claiming its address. Any
// message whose client hardware address or Ethernet source is not Config.MAC,
// or that comes through a relay, is ignored and counted.
//
// # Sockets and how replies are delivered
//
// Each Server opens two sockets on the interface, inside Config.Netns when set
// (the goroutine locks its OS thread, enters the namespace, creates the
// sockets, and returns; sockets keep the namespace they were made in):
//
//   - a UDP socket on port 67 bound to the device with SO_BINDTODEVICE, made by
//     the library's server4.NewIPv4UDPConn. It reserves the port on that device
//     so nothing else answers there and the kernel sends no port-unreachable
//     when the host owns 169.254.1.1; what it receives is drained and dropped.
//   - an AF_PACKET (SOCK_DGRAM, ETH_P_IP) socket bound to the interface with a
//     classic BPF filter for unfragmented UDP to port 67. Requests are read
//     here, and every reply is written here as an IPv4/UDP packet from
//     169.254.1.1:67 to port 68 inside an Ethernet frame addressed to the
//     guest's MAC (or to ff:ff:ff:ff:ff:ff when the reply is broadcast).
//
// Why raw frames: the host side of a tap has no IPv4 address and the guest
// has none yet, so a UDP unicast to the offered address would need an ARP
// entry the guest cannot answer, and a UDP broadcast from the host would carry
// whatever source address the host's routing picks rather than 169.254.1.1.
// Writing the frame ourselves lets the server follow RFC 2131 section 4.1 to
// the letter for a client on the link (no relay): NAK is broadcast; a client
// with ciaddr set (renewing, INFORM) gets unicast to ciaddr; a client that set
// the broadcast flag gets 255.255.255.255 at L2 broadcast; anyone else gets
// unicast to yiaddr at the client's MAC. Clients that have no address read DHCP
// with a packet socket of their own (busybox udhcpc, the library's nclient4,
// dhclient), so they accept all of these; the tests run both udhcpc and
// nclient4 against the server. Reading on the packet socket, rather than the
// UDP socket, also sees renewals and releases unicast to 169.254.1.1, which
// the UDP socket never gets because the host does not own that address.
//
// # Failure and restart
//
// The packet socket is bound to the interface index. When the tap goes down or
// is deleted (a guest reboot recreates it) the kernel reports ENETDOWN on it,
// Serve returns that error, and the Manager starts the server again with a
// capped exponential backoff; while the tap is missing each attempt fails
// quickly and is retried. Serve returns nil only when its context is
// cancelled. A Manager holds one server per tap, stops and waits for each one
// it replaces or removes, and reports per tap whether it is serving, its last
// error, leases handed out and the time of the last ACK.
package dhcp
