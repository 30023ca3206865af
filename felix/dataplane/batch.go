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
// processes every message of a send, acks (or refuses) each, and goes on after an error,
// so each route gets its own result. Only adds of a prefix with no route of ours go
// through it; replaces and deletes stay one at a time.
type Batcher struct {
	sock *nl.NetlinkSocket
	buf  []byte
	adds []batchedAdd
	seq  uint32
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
	msg, ok := encodeAdd(&r, b.seq+1)
	if !ok {
		return false
	}
	b.seq++
	b.buf = append(b.buf, msg...)
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
	if err := unix.Sendto(b.sock.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return adds, nil, fmt.Errorf("send %d route adds: %w", len(adds), err)
	}
	first := adds[0].seq
	results := make([]error, len(adds))
	got := 0
	for got < len(adds) {
		msgs, _, err := b.sock.Receive()
		if err != nil {
			return adds, nil, fmt.Errorf("read acks of %d route adds (%d read): %w", len(adds), got, err)
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
			got++
		}
	}
	return adds, results, nil
}

// encodeAdd is the RTM_NEWROUTE (create, exclusive, ack) of r: the kinds build makes
// (a local route out of an interface, a blackhole, a learned route via one next hop).
// Multipath routes are left to the handle.
func encodeAdd(r *netlink.Route, seq uint32) ([]byte, bool) {
	if len(r.MultiPath) > 0 || r.Dst == nil {
		return nil, false
	}
	dst, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return nil, false
	}
	dst = dst.Unmap()
	ones, _ := r.Dst.Mask.Size()
	fam := unix.AF_INET
	if dst.Is6() {
		fam = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Seq = seq
	msg := nl.NewRtMsg()
	msg.Family = uint8(fam)
	msg.Dst_len = uint8(ones)
	msg.Table = unix.RT_TABLE_MAIN
	msg.Protocol = uint8(r.Protocol)
	msg.Scope = uint8(r.Scope)
	msg.Type = unix.RTN_UNICAST
	if r.Type != 0 {
		msg.Type = uint8(r.Type)
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst.AsSlice()))
	if r.Gw != nil {
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok || gw.Unmap().Is4() != dst.Is4() {
			return nil, false
		}
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, gw.Unmap().AsSlice()))
	}
	if r.LinkIndex > 0 {
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, uint32(r.LinkIndex))
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, b))
	}
	return req.Serialize(), true
}
