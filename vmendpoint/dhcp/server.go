package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Status is what a server reports about its interface.
type Status struct {
	Interface string
	// Serving is true while the sockets are open and requests are answered.
	Serving bool
	// LastError is the last socket or setup error, nil when none happened
	// since the server last started serving; LastErrorTime is when.
	LastError     error
	LastErrorTime time.Time
	// Leases counts ACKs that handed out the address; LastAck is the last.
	Leases  uint64
	LastAck time.Time
	// Offers, Naks and Ignored count the other answers and non-answers.
	Offers  uint64
	Naks    uint64
	Ignored uint64
	// Starts counts how often the sockets were opened; Restarts counts a
	// Manager's attempts to serve again after a failure.
	Starts   int
	Restarts int
}

// Server answers DHCP for one guest on one interface. Its counters survive
// repeated calls to Serve, so a restarted server keeps its history.
type Server struct {
	log *zap.Logger

	mu     sync.Mutex
	status Status
}

// NewServer returns a server logging to log (nil means no logging).
func NewServer(log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{log: log}
}

// Status returns a copy of the server's status.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Server) update(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// Serve opens the sockets on cfg.Interface and answers the guest until ctx is
// cancelled, when it returns nil, or until a socket fails (the interface went
// down or away), when it returns the error. It closes everything it opened
// and leaves no goroutine behind.
func (s *Server) Serve(ctx context.Context, cfg Config) (err error) {
	cfg, err = cfg.clone().withDefaults()
	if err != nil {
		return fmt.Errorf("dhcp config: %w", err)
	}
	s.update(func(st *Status) { st.Interface = cfg.Interface })
	defer func() {
		s.update(func(st *Status) {
			st.Serving = false
			if err != nil {
				st.LastError, st.LastErrorTime = err, time.Now()
			}
		})
	}()
	socks, err := openSockets(cfg)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, socks.close)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { socks.drainUDP() })
	defer func() {
		socks.close() // unblocks drainUDP
		wg.Wait()
	}()

	log := s.log.With(zap.String("interface", cfg.Interface), zap.Stringer("mac", cfg.MAC), zap.Stringer("addr", cfg.Addr))
	s.update(func(st *Status) { st.Serving, st.LastError, st.Starts = true, nil, st.Starts+1 })
	log.Info("dhcp server started")

	buf := make([]byte, 2048)
	for {
		n, from, rerr := socks.raw.ReadFrom(buf)
		if rerr != nil {
			if ctx.Err() != nil {
				log.Info("dhcp server stopped")
				return nil
			}
			return fmt.Errorf("read dhcp on %s: %w", cfg.Interface, rerr)
		}
		var src net.HardwareAddr
		if a, ok := from.(*packet.Addr); ok {
			src = a.HardwareAddr
		}
		if werr := s.handle(log, socks.raw, cfg, src, buf[:n]); werr != nil {
			if ctx.Err() != nil {
				return nil
			}
			return werr
		}
	}
}

// handle answers one packet; only a failure to write is returned.
func (s *Server) handle(log *zap.Logger, conn *packet.Conn, cfg Config, src net.HardwareAddr, pkt []byte) error {
	payload, ok := parseRequest(pkt)
	if !ok {
		return nil
	}
	req, err := dhcpv4.FromBytes(payload)
	if err != nil {
		s.update(func(st *Status) { st.Ignored++ })
		log.Debug("malformed dhcp message", zap.Stringer("from", src), zap.Error(err))
		return nil
	}
	r, out, reason := respond(cfg, src, req)
	fields := []zap.Field{zap.Stringer("type", req.MessageType()), zap.Stringer("chaddr", req.ClientHWAddr), zap.Stringer("xid", req.TransactionID)}
	switch out {
	case outIgnored:
		s.update(func(st *Status) { st.Ignored++ })
		log.Debug("dhcp message ignored", append(fields, zap.String("reason", reason))...)
	case outOtherServer:
		log.Debug("dhcp request for another server", append(fields, zap.Stringer("server", req.ServerIdentifier()))...)
	case outRelease:
		log.Info("dhcp release from guest: address stays assigned", fields...)
	case outDecline:
		log.Warn("dhcp decline from guest: another host may claim its address", fields...)
	case outNak:
		log.Warn("dhcp request for another address refused", append(fields, zap.Stringer("requested", req.RequestedIPAddress()), zap.Stringer("ciaddr", req.ClientIPAddr))...)
	default:
		log.Debug("dhcp reply", append(fields, zap.Stringer("reply", r.msg.MessageType()), zap.Stringer("to", r.dstIP))...)
	}
	if r == nil {
		return nil
	}
	frame := udp4(cfg.Gateway, r.dstIP, r.msg.ToBytes())
	if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: r.dstMAC}); err != nil {
		return fmt.Errorf("send dhcp %v on %s: %w", r.msg.MessageType(), cfg.Interface, err)
	}
	s.update(func(st *Status) {
		switch out {
		case outOffer:
			st.Offers++
		case outAck:
			st.Leases++
			st.LastAck = time.Now()
		case outNak:
			st.Naks++
		}
	})
	if out == outAck {
		log.Info("dhcp lease acknowledged", fields...)
	}
	return nil
}

// sockets are the two sockets of one server.
type sockets struct {
	udp  net.PacketConn
	raw  *packet.Conn
	once sync.Once
}

func (s *sockets) close() {
	s.once.Do(func() {
		s.udp.Close()
		s.raw.Close()
	})
}

// drainUDP reads and drops what the port-67 socket receives: requests are read
// on the packet socket. It returns when the socket is closed.
func (s *sockets) drainUDP() {
	buf := make([]byte, 1500)
	for {
		if _, _, err := s.udp.ReadFrom(buf); err != nil {
			return
		}
	}
}

// openSockets opens the UDP and packet sockets on cfg.Interface, inside
// cfg.Netns when set.
func openSockets(cfg Config) (*sockets, error) {
	filter, err := requestFilter()
	if err != nil {
		return nil, fmt.Errorf("assemble dhcp filter: %w", err)
	}
	var socks *sockets
	err = inNetns(cfg.Netns, func() error {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return fmt.Errorf("find interface %s: %w", cfg.Interface, err)
		}
		udp, err := server4.NewIPv4UDPConn(cfg.Interface, &net.UDPAddr{Port: serverPort})
		if err != nil {
			return fmt.Errorf("open udp port %d on %s: %w", serverPort, cfg.Interface, err)
		}
		raw, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_IP, &packet.Config{Filter: filter})
		if err != nil {
			udp.Close()
			return fmt.Errorf("open packet socket on %s: %w", cfg.Interface, err)
		}
		socks = &sockets{udp: udp, raw: raw}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return socks, nil
}

// inNetns runs fn on a goroutine whose OS thread is inside the network
// namespace at path (the caller's namespace when path is empty). Sockets fn
// creates stay in that namespace after it returns. If the thread cannot be
// put back it is left locked, so the runtime discards it.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
