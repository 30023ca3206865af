package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// batchSize is how many new routes go in one sendmsg. A /32 route is ~60 bytes: 256 of
// them stay far below the socket's send buffer, and their acks fit one read.
const batchSize = 256

// Batcher adds new routes many to a sendmsg on its own rtnetlink socket, as zebra's
// dataplane does, instead of one request and one wait for its ack per route: with
// 100,000 learned routes the per-route round trip is most of the cost. The kernel
// processes every message of a send in order, within the sendmsg, and goes on after an
// error, so each route gets its own result. Only the last message of a batch asks for
// an ack: the kernel answers a failed request with an error whether or not it asked
// for an ack, so once the last ack is read every earlier failure has been read too, and
// the others succeeded. (One ack per route halves the install rate: 100,000 acks to
// build, queue and read.) Only adds of a prefix with no route of ours go through it;
// replaces and deletes stay one at a time.
type Batcher struct {
	sock *nl.NetlinkSocket
	buf  []byte
	adds []batchedAdd
	seq  uint32
	last int // offset in buf of the last message
}

// batchedAdd is a route add in the current batch.
type batchedAdd struct {
	p    netip.Prefix
	tgt  Target
	link int
	k    kroute
	seq  uint32
}

// NewBatcher opens the rtnetlink socket in the network namespace at nsPath (the current
// one when empty): the namespace of the RouteTable's handle.
func NewBatcher(nsPath string) (*Batcher, error) {
	target := netns.None()
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return nil, fmt.Errorf("batch route writer: open %s: %w", nsPath, err)
		}
		defer ns.Close()
		target = ns
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("batch route writer: rtnetlink socket: %w", err)
	}
	return &Batcher{sock: s, seq: 1 << 30}, nil
}

// Close closes the socket.
func (b *Batcher) Close() { b.sock.Close() }

// add queues a route add; false when the route is not one the batcher encodes (the
// caller writes it itself).
func (b *Batcher) add(p netip.Prefix, tgt Target, link int) bool {
	r, k := build(p, tgt, link)
	buf, ok := encodeAddFlags(b.buf, &r, b.seq+1, false)
	if !ok {
		return false
	}
	b.seq++
	b.buf, b.last = buf, len(b.buf)
	b.adds = append(b.adds, batchedAdd{p: p, tgt: tgt, link: link, k: k, seq: b.seq})
	return true
}

func (b *Batcher) full() bool { return len(b.adds) >= batchSize }

// flush sends the queued adds in one sendmsg and returns each one's result (nil or the
// kernel's errno), in queue order; err is a failure of the socket itself, after which
// none of the results is known.
func (b *Batcher) flush() ([]batchedAdd, []error, error) {
	adds := b.adds
	if len(adds) == 0 {
		return nil, nil, nil
	}
	buf := b.buf
	b.adds, b.buf = nil, b.buf[:0]
	// The last message asks for the ack that closes the batch.
	binary.NativeEndian.PutUint16(buf[b.last+6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	if err := unix.Sendto(b.sock.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return adds, nil, fmt.Errorf("send %d route adds: %w", len(adds), err)
	}
	first, last := adds[0].seq, adds[len(adds)-1].seq
	results := make([]error, len(adds))
	for done := false; !done; {
		msgs, _, err := b.sock.Receive()
		if err != nil {
			return adds, nil, fmt.Errorf("read the results of %d route adds: %w", len(adds), err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq < first || m.Header.Seq >= first+uint32(len(adds)) {
				continue // not an ack of this batch
			}
			i := int(m.Header.Seq - first)
			if len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					results[i] = syscall.Errno(-errno)
				}
			}
			done = done || m.Header.Seq == last
		}
	}
	return adds, results, nil
}

// encodeAdd appends to buf the RTM_NEWROUTE (create, exclusive, ack) of r: the kinds
// build makes (a local route out of an interface, a blackhole, a learned route via one
// next hop). Multipath routes are left to the handle. It writes the bytes itself, with
// no allocation: at 100,000 routes the netlink library's request objects cost more
// than the kernel's work.
func encodeAdd(buf []byte, r *netlink.Route, seq uint32) ([]byte, bool) {
	return encodeAddFlags(buf, r, seq, true)
}

// encodeAddFlags is encodeAdd with or without NLM_F_ACK.
func encodeAddFlags(buf []byte, r *netlink.Route, seq uint32, ack bool) ([]byte, bool) {
	if len(r.MultiPath) > 0 || r.Dst == nil {
		return buf, false
	}
	dst, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return buf, false
	}
	dst = dst.Unmap()
	ones, _ := r.Dst.Mask.Size()
	fam, alen := uint8(unix.AF_INET), 4
	if dst.Is6() {
		fam, alen = unix.AF_INET6, 16
	}
	var gw netip.Addr
	if r.Gw != nil {
		if gw, ok = netip.AddrFromSlice(r.Gw); !ok {
			return buf, false
		}
		if gw = gw.Unmap(); gw.Is4() != dst.Is4() {
			return buf, false
		}
	}
	typ := uint8(unix.RTN_UNICAST)
	if r.Type != 0 {
		typ = uint8(r.Type)
	}
	attr := func(b []byte, t uint16, data []byte) []byte {
		b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
		b = binary.NativeEndian.AppendUint16(b, t)
		b = append(b, data...)
		for len(b)%unix.RTA_ALIGNTO != 0 {
			b = append(b, 0)
		}
		return b
	}
	start := len(buf)
	buf = binary.NativeEndian.AppendUint32(buf, 0) // nlmsg_len, set below
	buf = binary.NativeEndian.AppendUint16(buf, unix.RTM_NEWROUTE)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_CREATE | unix.NLM_F_EXCL)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	buf = binary.NativeEndian.AppendUint16(buf, flags)
	buf = binary.NativeEndian.AppendUint32(buf, seq)
	buf = binary.NativeEndian.AppendUint32(buf, 0) // port id: the kernel's
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	buf = append(buf, fam, uint8(ones), 0, 0, unix.RT_TABLE_MAIN, uint8(r.Protocol), uint8(r.Scope), typ)
	buf = binary.NativeEndian.AppendUint32(buf, 0)
	var a [16]byte
	if dst.Is4() {
		b := dst.As4()
		copy(a[:], b[:])
	} else {
		a = dst.As16()
	}
	buf = attr(buf, unix.RTA_DST, a[:alen])
	if gw.IsValid() {
		if gw.Is4() {
			b := gw.As4()
			copy(a[:], b[:])
		} else {
			a = gw.As16()
		}
		buf = attr(buf, unix.RTA_GATEWAY, a[:alen])
	}
	if r.LinkIndex > 0 {
		var oif [4]byte
		binary.NativeEndian.PutUint32(oif[:], uint32(r.LinkIndex))
		buf = attr(buf, unix.RTA_OIF, oif[:])
	}
	binary.NativeEndian.PutUint32(buf[start:], uint32(len(buf)-start))
	return buf, true
}
