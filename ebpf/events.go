package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// DropReason says why the program dropped a packet.
type DropReason uint8

const (
	// DropPolicy: a rule with verdict Deny matched.
	DropPolicy DropReason = 1
	// DropDefault: no rule matched and the endpoint default is not Allow.
	DropDefault DropReason = 2
	// DropSpoof: the source IP or MAC is not the endpoint's.
	DropSpoof DropReason = 3
	// DropNoEndpoint: the program is attached but SetEndpoint was not called.
	DropNoEndpoint DropReason = 4
	// DropLog is no drop: a Log rule (RuleID) matched a new flow's packet; the
	// event's Verdict says what the program did next.
	DropLog DropReason = 5
)

func (r DropReason) String() string {
	switch r {
	case DropPolicy:
		return "policy"
	case DropDefault:
		return "default-deny"
	case DropSpoof:
		return "spoof"
	case DropNoEndpoint:
		return "no-endpoint"
	case DropLog:
		return "log"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// DropEvent is one dropped packet, or with Reason DropLog one packet a Log rule
// matched. Port fields are zero for protocols without ports.
type DropEvent struct {
	Ifindex   int
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	Proto     uint8
	Reason    DropReason
	Direction Direction
	RuleID    uint32
	// Verdict (DropLog events only) is what the program did with the packet after
	// logging it: Allow or Deny (a Deny also has its own drop event).
	Verdict Verdict
}

// dropEventSize is sizeof(struct drop_event) in bpf/tabby.c.
const dropEventSize = 24

func decodeDropEvent(b []byte) (DropEvent, error) {
	if len(b) < dropEventSize {
		return DropEvent{}, fmt.Errorf("drop event of %d bytes: %w", len(b), ErrInvalid)
	}
	ne := binary.NativeEndian
	return DropEvent{
		Ifindex:   int(ne.Uint32(b[0:])),
		Src:       wordIPv4(ne.Uint32(b[4:])),
		Dst:       wordIPv4(ne.Uint32(b[8:])),
		RuleID:    ne.Uint32(b[12:]),
		SrcPort:   ne.Uint16(b[16:]),
		DstPort:   ne.Uint16(b[18:]),
		Proto:     b[20],
		Reason:    DropReason(b[21]),
		Direction: Direction(b[22]),
		Verdict:   Verdict(b[23]),
	}, nil
}

// IsLog reports whether the event is a Log rule's report rather than a drop.
func (e DropEvent) IsLog() bool { return e.Reason == DropLog }

// DropReader reads drop events from the ring buffer. Only one reader should
// consume a ring buffer at a time: events go to whoever reads first.
type DropReader struct {
	r *ringbuf.Reader
}

// NewDropReader opens a reader on the drop ring buffer.
func (d *Datapath) NewDropReader() (*DropReader, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	r, err := ringbuf.NewReader(d.objs.TabbyDrops)
	if err != nil {
		return nil, fmt.Errorf("open drop reader: %w", err)
	}
	return &DropReader{r: r}, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded (wrapped) after t; the
// zero time means no deadline.
func (r *DropReader) SetDeadline(t time.Time) { r.r.SetDeadline(t) }

// Read blocks for the next drop event (until Close or the deadline).
func (r *DropReader) Read() (DropEvent, error) {
	rec, err := r.r.Read()
	if errors.Is(err, ringbuf.ErrClosed) {
		return DropEvent{}, fmt.Errorf("drop reader: %w", ErrClosed)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return DropEvent{}, fmt.Errorf("drop reader: %w", err)
	}
	if err != nil {
		return DropEvent{}, fmt.Errorf("read drop event: %w", err)
	}
	return decodeDropEvent(rec.RawSample)
}

// Close unblocks a pending Read and releases the reader.
func (r *DropReader) Close() error { return r.r.Close() }
