package probe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Server serves TCP, UDP and SCTP on some ports in one network namespace, on every
// address of it. Close stops it.
type Server struct {
	Netns string
	Ports []uint16

	mu      sync.Mutex
	closers []io.Closer
	wg      sync.WaitGroup
	once    sync.Once
	err     error
}

// Serve starts, inside the network namespace netns (a name under /run/netns or a
// path), for each port: a TCP listener that accepts, writes one byte and closes; a UDP
// socket that echoes every datagram; and, on one raw socket for all ports, an SCTP
// responder answering INIT with INIT ACK (see the package doc). On failure what was
// started is stopped.
func Serve(netns string, ports ...uint16) (*Server, error) {
	if len(ports) == 0 {
		return nil, errors.New("probe: serve: no ports")
	}
	s := &Server{Netns: netns, Ports: slices.Clone(ports)}
	err := inNetns(netns, func() error {
		for _, p := range ports {
			ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", p))
			if err != nil {
				return fmt.Errorf("listen tcp %d: %w", p, err)
			}
			s.add(ln)
			s.wg.Add(1)
			go s.serveTCP(ln)
			pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", p))
			if err != nil {
				return fmt.Errorf("listen udp %d: %w", p, err)
			}
			s.add(pc)
			s.wg.Add(1)
			go s.serveUDP(pc)
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, ipProtoSCTP)
		if err != nil {
			return fmt.Errorf("raw sctp socket: %w", err)
		}
		f := fileOf(fd, "sctp-responder")
		s.add(f)
		s.wg.Add(1)
		go s.serveSCTP(f)
		return nil
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("probe: serve in %s: %w", netns, err), s.Close())
	}
	return s, nil
}

func (s *Server) add(c io.Closer) {
	s.mu.Lock()
	s.closers = append(s.closers, c)
	s.mu.Unlock()
}

// Close stops every server and waits for their goroutines; only the first call does.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		cl := s.closers
		s.closers = nil
		s.mu.Unlock()
		var errs []error
		for _, c := range cl {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
		if len(errs) > 0 {
			s.err = fmt.Errorf("probe: close servers in %s: %w", s.Netns, errors.Join(errs...))
		}
	})
	return s.err
}

func (s *Server) serveTCP(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNABORTED and the like: the next one
		}
		// One byte into an empty send buffer never blocks; the deadline is a guard.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte{'k'})
		_ = c.Close()
	}
}

func (s *Server) serveUDP(pc net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

func (s *Server) serveSCTP(f *os.File) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		src, _, p, ok := parseSCTP(buf[:n])
		if !ok || p.Chunk != chunkInit || p.VTag != 0 || p.InitTag == 0 || !slices.Contains(s.Ports, p.DstPort) {
			continue
		}
		var r [12]byte
		_, _ = rand.Read(r[:])
		tag := binary.BigEndian.Uint32(r[0:]) | 1
		ack := buildInitAck(p.DstPort, p.SrcPort, p.InitTag, tag, binary.BigEndian.Uint32(r[4:]), r[4:12])
		_ = sendto(f, ack, &unix.SockaddrInet4{Addr: src.As4()})
	}
}
