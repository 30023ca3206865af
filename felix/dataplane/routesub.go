package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// routeEventFilter is a classic BPF socket filter for the route subscription: the
// kernel drops, before queueing them, the events felix never needs, which are most of
// them while routes are installed: an RTM_NEWROUTE of a learned route (protocol 117)
// only ever repeats a write of felix's own, whose result felix has from the write.
// What passes: every event of a route of Tabby's local protocol (116: the CNI plugin
// writes those too) and every RTM_DELROUTE of Tabby's protocols (a route deleted
// behind felix's back comes back). Events of other protocols are dropped too: felix
// ignores them anyway. A message is one event (the kernel sends one per skb); the
// filter reads nlmsg_type (host order, two bytes at 4) and rtm_protocol (byte 21).
func routeEventFilter() []unix.SockFilter {
	var newRoute [2]byte
	binary.NativeEndian.PutUint16(newRoute[:], unix.RTM_NEWROUTE)
	// BPF_H loads big-endian: compare with the host-order bytes read that way.
	newRouteBE := uint32(binary.BigEndian.Uint16(newRoute[:]))
	const (
		ldb  = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldh  = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
		keep = 0xffffffff
		drop = 0
	)
	return []unix.SockFilter{
		/* 0 */ {Code: ldb, K: unix.NLMSG_HDRLEN + 5}, // rtm_protocol
		/* 1 */ {Code: jeq, K: uint32(routes.ProtocolLocal), Jt: 3}, // -> keep
		/* 2 */ {Code: jeq, K: uint32(routes.ProtocolLearned), Jf: 3}, // -> drop
		/* 3 */ {Code: ldh, K: 4}, // nlmsg_type
		/* 4 */ {Code: jeq, K: newRouteBE, Jt: 1}, // learned RTM_NEWROUTE -> drop
		/* 5 */ {Code: ret, K: keep},
		/* 6 */ {Code: ret, K: drop},
	}
}

// subscribeRoutes is netlink.RouteSubscribeWithOptions with routeEventFilter on the
// socket: it delivers the events that pass it to ch until done is closed or the socket
// fails (errf hears why, then ch is closed).
func subscribeRoutes(ns *netns.NsHandle, ch chan<- netlink.RouteUpdate, done <-chan struct{}, errf func(error)) error {
	target := netns.None()
	if ns != nil {
		target = *ns
	}
	s, err := nl.SubscribeAt(target, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return fmt.Errorf("route event socket: %w", err)
	}
	fd := s.GetFd()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, eventBuffer); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, eventBuffer)
	}
	prog := routeEventFilter()
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		s.Close()
		return fmt.Errorf("route event socket: attach filter: %w", err)
	}
	go func() {
		<-done
		s.Close()
	}()
	go func() {
		defer close(ch)
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				select {
				case <-done: // closed on purpose
				default:
					if errf != nil {
						errf(err)
					}
				}
				return
			}
			if from.Pid != nl.PidKernel {
				continue
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE {
					continue
				}
				r, ok := parseRouteMsg(m.Data)
				if !ok {
					continue
				}
				select {
				case ch <- netlink.RouteUpdate{Type: m.Header.Type, NlFlags: m.Header.Flags, Route: r}:
				case <-done:
					return
				}
			}
		}
	}()
	return nil
}

// parseRouteMsg reads what felix uses of a route message (rtmsg and attributes): the
// family, destination, table, protocol, scope, type, priority, output interface and
// next hops. ok is false for a message too short to be one.
func parseRouteMsg(b []byte) (netlink.Route, bool) {
	var r netlink.Route
	if len(b) < unix.SizeofRtMsg {
		return r, false
	}
	family, dstLen := int(b[0]), int(b[1])
	r.Family = family
	r.Table = int(b[4])
	r.Protocol = netlink.RouteProtocol(b[5])
	r.Scope = netlink.Scope(b[6])
	r.Type = int(b[7])
	r.Flags = int(binary.NativeEndian.Uint32(b[8:12]))
	bits := 32
	if family == unix.AF_INET6 {
		bits = 128
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil {
		return r, false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_DST:
			r.Dst = &net.IPNet{IP: net.IP(append([]byte(nil), a.Value...)), Mask: net.CIDRMask(dstLen, bits)}
		case unix.RTA_GATEWAY:
			r.Gw = net.IP(append([]byte(nil), a.Value...))
		case unix.RTA_OIF:
			if len(a.Value) >= 4 {
				r.LinkIndex = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.RTA_PRIORITY:
			if len(a.Value) >= 4 {
				r.Priority = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.RTA_TABLE:
			if len(a.Value) >= 4 {
				r.Table = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.RTA_MULTIPATH:
			r.MultiPath = parseMultipath(a.Value)
		}
	}
	if r.Dst == nil { // a default route
		ip := net.IPv4zero.To4()
		if family == unix.AF_INET6 {
			ip = net.IPv6zero
		}
		r.Dst = &net.IPNet{IP: ip, Mask: net.CIDRMask(0, bits)}
	}
	return r, true
}

// parseMultipath reads RTA_MULTIPATH: rtnexthop records, each with its attributes.
func parseMultipath(b []byte) []*netlink.NexthopInfo {
	var out []*netlink.NexthopInfo
	for len(b) >= unix.SizeofRtNexthop {
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < unix.SizeofRtNexthop || n > len(b) {
			break
		}
		nh := &netlink.NexthopInfo{Hops: int(b[3]), LinkIndex: int(binary.NativeEndian.Uint32(b[4:8])),
			Flags: int(b[2])}
		if attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtNexthop:n]); err == nil {
			for _, a := range attrs {
				if a.Attr.Type == unix.RTA_GATEWAY {
					nh.Gw = net.IP(append([]byte(nil), a.Value...))
				}
			}
		}
		out = append(out, nh)
		b = b[(n+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1):]
		if len(b) < unix.SizeofRtNexthop {
			break
		}
	}
	return out
}
