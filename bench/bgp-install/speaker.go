package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/bgp/controller"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// speakerCmd, as the first argument, makes this program the reference's Tabby speaker
// (speakerMain) instead of the benchmark. The benchmark starts it with `ip netns exec`,
// so that the whole process, and every socket gobgp opens from any thread, is inside
// the speaker's namespace.
const speakerCmd = "ref-speaker"

// speakerMain runs an in-process bgp.NewGoBGP speaker (the one tabby-node embeds) that
// originates n /32s from base and peers with the router at peer, configured exactly as
// tabby-node configures a BGPPeer: controller.Calc turns a Node, a BGPPeer and a
// BGPFilter (here exporting the range, where ours imports it) into the speaker's Global
// and Peer (defaults: hold 90 s, keepalive 30 s, graceful restart 120 s, next hop self).
// It tells its parent on stdout:
//
//	advertised <n> <nanoseconds>   the n Advertise calls are done
//	ready                          the peer is configured too
//	state <state> <unix ns>        the session entered state at (PeerState.Since)
//
// and runs until SIGTERM (or its parent's death), then stops with a Cease.
func speakerMain(args []string) int {
	fs := flag.NewFlagSet(speakerCmd, flag.ContinueOnError)
	addr := fs.String("addr", "", "our address (router ID, session source)")
	peer := fs.String("peer", "", "the router's address")
	peerAS := fs.Uint("peer-as", 0, "the router's AS")
	base := fs.String("base", "", "first prefix's address")
	n := fs.Int("n", 0, "number of /32s to originate")
	cidr := fs.String("range", "", "the range the export filter allows")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := runSpeaker(*addr, *peer, uint32(*peerAS), *base, *cidr, *n); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", speakerCmd, err)
		return 1
	}
	return 0
}

func runSpeaker(addrS, peerS string, peerAS uint32, baseS, cidr string, n int) error {
	addr, err := netip.ParseAddr(addrS)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	peer, err := netip.ParseAddr(peerS)
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	base, err := netip.ParseAddr(baseS)
	if err != nil || !base.Is4() {
		return fmt.Errorf("base %q: want an IPv4 address", baseS)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	// What tabby-node would make of a Node with this address and a BGPPeer to the router
	// naming a BGPFilter for the range.
	const nodeName, filterName = "ref", "ref-range"
	d := controller.Calc(controller.Input{
		NodeName: nodeName,
		Nodes: []*v1.Node{{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
			Spec: v1.NodeSpec{BGP: &v1.NodeBGPSpec{IPv4Address: addr.String() + "/24"}}}},
		Peers: []*v1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "ref-router"},
			Spec: v1.BGPPeerSpec{PeerIP: peer.String(), ASNumber: v1.ASNumber(peerAS), Filters: []string{filterName}}}},
		Filters: []*v1.BGPFilter{{ObjectMeta: metav1.ObjectMeta{Name: filterName},
			Spec: v1.BGPFilterSpec{ExportV4: []v1.BGPFilterRule{{CIDR: cidr, MatchOperator: v1.MatchIn, Action: v1.BGPFilterAccept}}}}},
	})
	if len(d.Problems) > 0 || d.Global == nil {
		return fmt.Errorf("calc: no global or problems: %v", d.Problems)
	}
	p, ok := d.Peers[peer]
	if !ok {
		return fmt.Errorf("calc: no peer %s", peer)
	}

	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(os.Stderr), zapcore.InfoLevel))
	sp := bgp.NewGoBGP(log)
	ctx := context.Background()
	if err := sp.Start(ctx, d.Global.SpeakerGlobal()); err != nil {
		return err
	}
	var outMu sync.Mutex
	say := func(f string, a ...any) {
		outMu.Lock()
		fmt.Printf(f+"\n", a...)
		outMu.Unlock()
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range sp.Watch() {
			if ev.Kind != bgp.EventPeer || ev.Peer != peer {
				continue
			}
			since := time.Now()
			if ps, err := sp.Peers(ctx); err == nil {
				for _, s := range ps {
					if s.Address == peer && s.State == ev.State && !s.Since.IsZero() {
						since = s.Since
					}
				}
			}
			say("state %s %d", ev.State, since.UnixNano())
		}
	}()

	start := time.Now()
	b := base.As4()
	first := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for i := range n {
		if err := sp.Advertise(ctx, prefixAt(first, i), bgp.PathAttrs{}); err != nil {
			return err
		}
	}
	say("advertised %d %d", n, time.Since(start).Nanoseconds())
	if err := sp.AddPeer(ctx, d.SpeakerPeer(p)); err != nil {
		return err
	}
	say("ready")
	<-sigs
	err = sp.Stop(ctx, false)
	<-watched
	return err
}

// prefixAt is the i-th /32 from first.
func prefixAt(first uint32, i int) netip.Prefix {
	v := first + uint32(i)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
}

// refSpeaker is the running speaker process, seen from the benchmark.
type refSpeaker struct {
	cmd        *exec.Cmd
	log        string
	advertised chan time.Duration // the time the n Advertise calls took
	ready      chan struct{}
	states     chan peerState
	exited     chan struct{}
	stopThread chan struct{}
}

// peerState is a "state" line: the session entered State at Since.
type peerState struct {
	State string
	Since time.Time
}

// startSpeaker starts this program as the speaker inside netns (see speakerMain), its
// stderr in logPath. It is forked from a locked thread of its own that lives until
// stop: the kernel sends the parent-death signal (SIGKILL) when the forking thread
// ends, so the speaker dies with the benchmark, and not before.
func startSpeaker(netns, logPath string, args ...string) (*refSpeaker, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, self, speakerCmd}, args...)...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &refSpeaker{cmd: cmd, log: logPath, advertised: make(chan time.Duration, 1), ready: make(chan struct{}),
		states: make(chan peerState, 64), exited: make(chan struct{}), stopThread: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		<-s.stopThread
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start the reference speaker: %w", err)
	}
	go s.read(out)
	return s, nil
}

func (s *refSpeaker) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "advertised":
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			s.advertised <- time.Duration(ns)
		case len(f) == 1 && f[0] == "ready":
			close(s.ready)
		case len(f) == 3 && f[0] == "state":
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			select {
			case s.states <- peerState{State: f[1], Since: time.Unix(0, ns)}:
			default: // nobody listens: a flapping session before a round
			}
		}
	}
	_ = s.cmd.Wait()
	close(s.exited)
}

// waitReady waits until the speaker has originated its prefixes and configured the peer,
// and returns the time the Advertise calls took.
func (s *refSpeaker) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	var took time.Duration
	for {
		select {
		case took = <-s.advertised:
		case <-s.ready:
			// "advertised" comes first: it is queued if the select took "ready".
			select {
			case took = <-s.advertised:
			default:
			}
			return took, nil
		case <-s.exited:
			return 0, fmt.Errorf("the reference speaker exited: %s", tailFile(s.log, 2048))
		case <-t.C:
			return 0, fmt.Errorf("the reference speaker is not ready after %v", timeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// drainStates forgets the state lines so far.
func (s *refSpeaker) drainStates() {
	for {
		select {
		case <-s.states:
		default:
			return
		}
	}
}

// waitEstablished waits for a "state Established" line and returns its Since.
func (s *refSpeaker) waitEstablished(ctx context.Context, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case st := <-s.states:
			if st.State == string(bgp.StateEstablished) {
				return st.Since, nil
			}
		case <-s.exited:
			return time.Time{}, fmt.Errorf("the reference speaker exited: %s", tailFile(s.log, 2048))
		case <-t.C:
			return time.Time{}, fmt.Errorf("the reference speaker's session is not Established after %v", timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// stop sends SIGTERM (SIGKILL after 10 s) and waits for the exit.
func (s *refSpeaker) stop() error {
	defer close(s.stopThread)
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal the reference speaker: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return errors.New("the reference speaker did not exit within 10s of SIGTERM: killed")
}

// tailFile is the last max bytes of path.
func tailFile(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
