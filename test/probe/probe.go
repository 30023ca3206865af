package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Proto is a probe's transport protocol.
type Proto string

// The protocols a probe speaks.
const (
	TCP  Proto = "TCP"
	UDP  Proto = "UDP"
	SCTP Proto = "SCTP"
)

// Source ports probes take, in sequence per source namespace (see the package doc).
const (
	FirstPort = 20000
	LastPort  = 60999
)

// Resend is how often an unanswered UDP datagram or SCTP INIT is sent again.
const Resend = 100 * time.Millisecond

// Result is what one probe saw.
type Result struct {
	// Allowed: the server answered (TCP connected, UDP echoed, SCTP INIT ACK).
	Allowed bool
	// Detail is "answered", "timeout" or "refused".
	Detail string
	// Took is how long the probe ran.
	Took time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%s after %v", r.Detail, r.Took.Round(time.Millisecond))
}

// Prober probes from any number of network namespaces. It keeps one raw SCTP socket
// per source namespace it probed SCTP from, and each namespace's next source port.
// It is safe for concurrent use; Close releases it.
type Prober struct {
	mu     sync.Mutex
	closed bool
	sctp   map[string]*sctpEndpoint
	ports  map[string]uint16
}

// NewProber returns a Prober.
func NewProber() *Prober {
	return &Prober{sctp: map[string]*sctpEndpoint{}, ports: map[string]uint16{}}
}

// Close closes the raw sockets and waits for their readers.
func (p *Prober) Close() error {
	p.mu.Lock()
	eps := p.sctp
	p.sctp, p.closed = map[string]*sctpEndpoint{}, true
	p.mu.Unlock()
	var errs []error
	for _, ep := range eps {
		errs = append(errs, ep.close())
	}
	return errors.Join(errs...)
}

// Probe is one probe with a Prober of its own (see Prober.Probe).
func Probe(ctx context.Context, fromNetns string, to netip.Addr, proto Proto, port uint16, timeout time.Duration) (Result, error) {
	p := NewProber()
	r, err := p.Probe(ctx, fromNetns, to, proto, port, timeout)
	return r, errors.Join(err, p.Close())
}

// Probe makes one connection attempt from the network namespace fromNetns (a name
// under /run/netns or a path) to to:port over proto, for at most timeout (and ctx).
// Not being answered is a Result, not an error; an error means the probe could not be
// made (no such namespace, no socket).
func (p *Prober) Probe(ctx context.Context, fromNetns string, to netip.Addr, proto Proto, port uint16, timeout time.Duration) (Result, error) {
	if !to.Is4() {
		return Result{}, fmt.Errorf("probe: %s: only IPv4", to)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var r Result
	var err error
	switch proto {
	case TCP:
		r, err = p.probeTCP(ctx, fromNetns, to, port, deadline)
	case UDP:
		r, err = p.probeUDP(ctx, fromNetns, to, port, deadline)
	case SCTP:
		r, err = p.probeSCTP(ctx, fromNetns, to, port, deadline)
	default:
		return Result{}, fmt.Errorf("probe: unknown protocol %q", proto)
	}
	r.Took = time.Since(start)
	if err != nil {
		return r, fmt.Errorf("probe: %s %s -> %s:%d: %w", proto, fromNetns, to, port, err)
	}
	if r.Detail == "timeout" && ctx.Err() != nil {
		return r, fmt.Errorf("probe: %s %s -> %s:%d: %w", proto, fromNetns, to, port, ctx.Err())
	}
	return r, nil
}

// nextPort is the namespace's next source port.
func (p *Prober) nextPort(netns string) uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	port, ok := p.ports[netns]
	switch {
	case !ok:
		port = FirstPort + uint16(randU32()%((LastPort-FirstPort)/2))
	case port >= LastPort:
		port = FirstPort
	default:
		port++
	}
	p.ports[netns] = port
	return port
}

// boundSocket makes a socket in netns bound to the namespace's next free source port.
func (p *Prober) boundSocket(netns string, typ int) (int, error) {
	var last error
	for range 32 {
		fd, err := socketIn(netns, unix.AF_INET, typ, 0)
		if err != nil {
			return -1, err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(p.nextPort(netns))})
		if err == nil {
			return fd, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			return -1, fmt.Errorf("bind: %w", err)
		}
		last = err
	}
	return -1, fmt.Errorf("bind: no free source port: %w", last)
}

// watch makes f's deadline now when ctx ends, so a blocked read or wait returns.
func watch(ctx context.Context, f *os.File) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = f.SetDeadline(time.Now()) })
}

func (p *Prober) probeTCP(ctx context.Context, netns string, to netip.Addr, port uint16, deadline time.Time) (Result, error) {
	fd, err := p.boundSocket(netns, unix.SOCK_STREAM)
	if err != nil {
		return Result{}, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: to.As4()}); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		if isRefused(err) {
			return Result{Detail: "refused"}, nil
		}
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	f := fileOf(fd, "tcp-probe")
	defer f.Close()
	defer watch(ctx, f)()
	if err := f.SetDeadline(deadline); err != nil {
		return Result{}, fmt.Errorf("deadline: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = err
			return true
		}
		switch e := unix.Errno(v); e {
		case 0:
			_, err := unix.Getpeername(int(fd))
			return err == nil // ENOTCONN: still connecting, wait
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			soErr = e
			return true
		}
	})
	switch {
	case errors.Is(werr, os.ErrDeadlineExceeded):
		return Result{Detail: "timeout"}, nil
	case werr != nil:
		return Result{}, fmt.Errorf("connect: %w", werr)
	case isRefused(soErr):
		return Result{Detail: "refused"}, nil
	case soErr != nil:
		return Result{}, fmt.Errorf("connect: %w", soErr)
	}
	var b [1]byte
	n, err := f.Read(b[:])
	switch {
	case n == 1 || errors.Is(err, io.EOF):
		return Result{Allowed: true, Detail: "answered"}, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Connected, but the server's byte did not come: the reply path is cut.
		return Result{Detail: "timeout"}, nil
	case isRefused(err) || errors.Is(err, unix.ECONNRESET):
		return Result{Detail: "refused"}, nil
	}
	return Result{}, fmt.Errorf("read: %w", err)
}

func (p *Prober) probeUDP(ctx context.Context, netns string, to netip.Addr, port uint16, deadline time.Time) (Result, error) {
	fd, err := p.boundSocket(netns, unix.SOCK_DGRAM)
	if err != nil {
		return Result{}, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: to.As4()}); err != nil {
		unix.Close(fd)
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	f := fileOf(fd, "udp-probe")
	defer f.Close()
	defer watch(ctx, f)()
	var payload [16]byte
	_, _ = rand.Read(payload[:])
	buf := make([]byte, 64)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := f.SetWriteDeadline(deadline); err != nil {
			return Result{}, fmt.Errorf("deadline: %w", err)
		}
		if _, err := f.Write(payload[:]); err != nil {
			if isRefused(err) {
				return Result{Detail: "refused"}, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return Result{}, fmt.Errorf("send: %w", err)
		}
		next := time.Now().Add(Resend)
		if next.After(deadline) {
			next = deadline
		}
		if err := f.SetReadDeadline(next); err != nil {
			return Result{}, fmt.Errorf("deadline: %w", err)
		}
		for {
			n, err := f.Read(buf)
			if err == nil {
				if n == len(payload) && [16]byte(buf[:16]) == payload {
					return Result{Allowed: true, Detail: "answered"}, nil
				}
				continue // not our payload: keep reading until the resend time
			}
			if isRefused(err) {
				return Result{Detail: "refused"}, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return Result{}, fmt.Errorf("receive: %w", err)
		}
	}
	return Result{Detail: "timeout"}, nil
}

func (p *Prober) probeSCTP(ctx context.Context, netns string, to netip.Addr, port uint16, deadline time.Time) (Result, error) {
	ep, err := p.endpoint(netns)
	if err != nil {
		return Result{}, err
	}
	tag := randU32() | 1
	key := sctpKey{peer: to, peerPort: port, localPort: p.nextPort(netns), tag: tag}
	ch := ep.register(key)
	defer ep.unregister(key)
	pkt := buildInit(key.localPort, port, tag, randU32())
	dst := &unix.SockaddrInet4{Addr: to.As4()}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		if err := sendto(ep.f, pkt, dst); err != nil {
			return Result{}, err
		}
		resend := time.NewTimer(Resend)
		select {
		case <-ch:
			resend.Stop()
			return Result{Allowed: true, Detail: "answered"}, nil
		case <-timer.C:
			resend.Stop()
			return Result{Detail: "timeout"}, nil
		case <-ctx.Done():
			resend.Stop()
			return Result{Detail: "timeout"}, nil
		case <-resend.C:
		}
	}
}

// sctpKey identifies the INIT ACK a probe waits for.
type sctpKey struct {
	peer                netip.Addr
	peerPort, localPort uint16
	tag                 uint32
}

// sctpEndpoint is a raw SCTP socket in one namespace and the probes waiting on it.
type sctpEndpoint struct {
	f    *os.File
	done chan struct{}

	mu      sync.Mutex
	waiters map[sctpKey]chan struct{}
}

// endpoint is the namespace's raw SCTP socket, made on first use.
func (p *Prober) endpoint(netns string) (*sctpEndpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("prober closed")
	}
	if ep, ok := p.sctp[netns]; ok {
		return ep, nil
	}
	fd, err := socketIn(netns, unix.AF_INET, unix.SOCK_RAW, ipProtoSCTP)
	if err != nil {
		return nil, fmt.Errorf("raw sctp socket: %w", err)
	}
	ep := &sctpEndpoint{f: fileOf(fd, "sctp-prober"), done: make(chan struct{}), waiters: map[sctpKey]chan struct{}{}}
	go ep.read()
	p.sctp[netns] = ep
	return ep, nil
}

func (ep *sctpEndpoint) register(k sctpKey) chan struct{} {
	ch := make(chan struct{})
	ep.mu.Lock()
	ep.waiters[k] = ch
	ep.mu.Unlock()
	return ch
}

func (ep *sctpEndpoint) unregister(k sctpKey) {
	ep.mu.Lock()
	delete(ep.waiters, k)
	ep.mu.Unlock()
}

// read hands each INIT ACK to the probe waiting for it.
func (ep *sctpEndpoint) read() {
	defer close(ep.done)
	buf := make([]byte, 65536)
	for {
		n, err := ep.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		src, _, pk, ok := parseSCTP(buf[:n])
		if !ok || pk.Chunk != chunkInitAck {
			continue
		}
		k := sctpKey{peer: src, peerPort: pk.SrcPort, localPort: pk.DstPort, tag: pk.VTag}
		ep.mu.Lock()
		if ch, ok := ep.waiters[k]; ok {
			close(ch)
			delete(ep.waiters, k)
		}
		ep.mu.Unlock()
	}
}

func (ep *sctpEndpoint) close() error {
	err := ep.f.Close()
	<-ep.done
	return err
}

func randU32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
