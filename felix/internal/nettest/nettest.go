// Package nettest builds throw-away node network namespaces for felix's integration
// tests: a namespace named tfx-<random>, veth pairs inside it, a netlink handle, and
// reads of /proc/sys from a thread inside it. Everything is removed in t.Cleanup.
// Tests that need it call Require first: without root they skip (fail under CI=true).
package nettest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Require skips the test (fails it under CI=true) unless it runs as root with `ip`.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (-short)")
	}
	var why error
	if os.Geteuid() != 0 {
		why = errors.New("network namespaces need root")
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = err
	}
	if why == nil {
		return
	}
	msg := "!!! felix integration test needs root and iproute2: " + why.Error()
	if v, _ := strconv.ParseBool(os.Getenv("CI")); v {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, strings.Repeat("!", 78)+"\n"+msg+"\n!!! SKIPPING (this would FAIL under CI=true)\n"+strings.Repeat("!", 78))
	t.Skip(msg)
}

// Node is a network namespace standing in for a node.
type Node struct {
	Name string // tfx-<random>
	Path string // /run/netns/<Name>
	NS   netns.NsHandle
	H    *netlink.Handle
	t    testing.TB
	thr  *dataplane.NSThread
}

// NewNode makes a namespace with lo up and forwarding on.
func NewNode(t testing.TB) *Node {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	n := &Node{Name: "tfx-" + hex.EncodeToString(b), t: t}
	n.Path = filepath.Join("/run/netns", n.Name)
	n.Run("ip", "netns", "add", n.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Name).Run() })
	n.Run("ip", "-n", n.Name, "link", "set", "lo", "up")
	var err error
	if n.NS, err = netns.GetFromPath(n.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.NS.Close() })
	if n.H, err = netlink.NewHandleAt(n.NS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.H.Close)
	if n.thr, err = dataplane.NewNSThread(n.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.thr.Close)
	n.WriteSysctl("net/ipv4/ip_forward", "1")
	return n
}

// Run runs a command (ip ...) and fails the test if it fails; it returns the output.
func (n *Node) Run(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Try(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Try runs a command and returns its output and error.
func (n *Node) Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// IP runs `ip -n <node> args...`.
func (n *Node) IP(args ...string) string {
	n.t.Helper()
	return n.Run("ip", append([]string{"-n", n.Name}, args...)...)
}

// AddVeth makes a veth pair inside the node, both ends up; host gets addr (CIDR) when
// not empty. It returns the index of host.
func (n *Node) AddVeth(host, peer, addr string) int {
	n.t.Helper()
	n.IP("link", "add", host, "type", "veth", "peer", "name", peer)
	if addr != "" {
		n.IP("addr", "add", addr, "dev", host)
	}
	n.IP("link", "set", peer, "up")
	n.IP("link", "set", host, "up")
	l, err := n.H.LinkByName(host)
	if err != nil {
		n.t.Fatal(err)
	}
	return l.Attrs().Index
}

// ReadSysctl reads /proc/sys/<path> from a thread inside the node.
func (n *Node) ReadSysctl(path string) (string, error) {
	var b []byte
	var err error
	n.thr.Do(func() { b, err = os.ReadFile(filepath.Join("/proc/sys", path)) })
	return strings.TrimSpace(string(b)), err
}

// WriteSysctl writes /proc/sys/<path> from a thread inside the node.
func (n *Node) WriteSysctl(path, value string) {
	n.t.Helper()
	var err error
	n.thr.Do(func() { err = os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644) })
	if err != nil {
		n.t.Fatal(err)
	}
}

// Routes lists the main table's IPv4 routes with protocol proto (0: all).
func (n *Node) Routes(proto int) []netlink.Route {
	n.t.Helper()
	mask := netlink.RT_FILTER_TABLE
	if proto != 0 {
		mask |= netlink.RT_FILTER_PROTOCOL
	}
	rs, err := n.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254, Protocol: netlink.RouteProtocol(proto)}, mask)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		n.t.Fatal(err)
	}
	return rs
}

// Eventually polls cond until it returns "" (nothing missing) or the deadline passes,
// then fails with cond's last answer. Polling here is the wait, not a synchronisation
// by sleeping: the test proceeds the moment cond holds.
func Eventually(t testing.TB, within time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, within, why)
		}
		<-tick.C
	}
}
