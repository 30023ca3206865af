package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/tabbynet/tabby/test/netnode"
)

// The benchmark's addresses, all inside 10.88.0.0/16 and all in its own namespaces:
// the node's gateway address (on lo, answering the pods' ARP) and the two pods' /32s.
const (
	gwAddr    = "10.88.0.1"
	podAAddr  = "10.88.1.2"
	podBAddr  = "10.88.2.2"
	iperfPort = 5201
	hostVethA = "tbpola"
	hostVethB = "tbpolb"
)

// topo is a node namespace and two pod namespaces, each pod's eth0 joined to a
// host-side veth in the node, routed with /32s as Tabby routes workloads.
type topo struct {
	nd           *netnode.Node
	podA, podB   string
	ifA, ifB     int    // host-side ifindexes, in the node namespace
	macA, macB   []byte // the pods' eth0 MACs
	server       *exec.Cmd
	serverOut    *lockedBuffer
	serverExited chan error
}

func newTopo(ctx context.Context, cl *netnode.Cleanup, id string) (*topo, error) {
	nd, err := netnode.New(ctx, netnode.Options{Prefix: id, Cleanup: cl})
	if err != nil {
		return nil, fmt.Errorf("node namespace: %w", err)
	}
	t := &topo{nd: nd}
	if t.podA, err = nd.NewPodNS(ctx, "a"); err != nil {
		return nil, fmt.Errorf("pod namespace: %w", err)
	}
	if t.podB, err = nd.NewPodNS(ctx, "b"); err != nil {
		return nil, fmt.Errorf("pod namespace: %w", err)
	}
	if _, err := nd.IP(ctx, "addr", "add", gwAddr+"/32", "dev", "lo"); err != nil {
		return nil, fmt.Errorf("gateway address: %w", err)
	}
	for _, p := range []struct {
		host, pod, addr string
		ifindex         *int
		mac             *[]byte
	}{{hostVethA, t.podA, podAAddr, &t.ifA, &t.macA}, {hostVethB, t.podB, podBAddr, &t.ifB, &t.macB}} {
		for _, args := range [][]string{
			{"-n", nd.Name, "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", p.pod},
			{"-n", nd.Name, "link", "set", p.host, "up"},
			{"-n", p.pod, "addr", "add", p.addr + "/32", "dev", "eth0"},
			{"-n", p.pod, "link", "set", "eth0", "up"},
			{"-n", p.pod, "route", "add", gwAddr, "dev", "eth0", "scope", "link"},
			{"-n", p.pod, "route", "add", "default", "via", gwAddr, "dev", "eth0"},
			{"-n", nd.Name, "route", "add", p.addr + "/32", "dev", p.host, "scope", "link"},
		} {
			if _, err := netnode.Run(ctx, "ip", args...); err != nil {
				return nil, fmt.Errorf("veth for %s: %w", p.pod, err)
			}
		}
		l, err := nd.Handle.LinkByName(p.host)
		if err != nil {
			return nil, fmt.Errorf("host veth %s: %w", p.host, err)
		}
		*p.ifindex = l.Attrs().Index
		_, h, err := nd.Open(p.pod)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", p.pod, err)
		}
		e, err := h.LinkByName("eth0")
		if err != nil {
			return nil, fmt.Errorf("eth0 in %s: %w", p.pod, err)
		}
		*p.mac = e.Attrs().HardwareAddr
	}
	return t, nil
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer starts the iperf3 server in pod B (stopped by cl) and waits until a
// TCP connect from pod A reaches it, which also proves the routed path works.
func (t *topo) startServer(ctx context.Context, cl *netnode.Cleanup) error {
	t.serverOut = &lockedBuffer{}
	t.server = exec.Command("ip", "netns", "exec", t.podB, "iperf3", "-s", "-B", podBAddr,
		"-p", strconv.Itoa(iperfPort))
	t.server.Stdout, t.server.Stderr = t.serverOut, t.serverOut
	// A run killed outright must not leave the server running in a deleted namespace.
	t.server.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.server.Start(); err != nil {
		return fmt.Errorf("start iperf3 server: %w", err)
	}
	t.serverExited = make(chan error, 1)
	go func() { t.serverExited <- t.server.Wait() }()
	cl.Add("stop the iperf3 server", func() error {
		_ = t.server.Process.Kill()
		select {
		case <-t.serverExited:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("iperf3 server did not exit")
		}
	})
	target := net.JoinHostPort(podBAddr, strconv.Itoa(iperfPort))
	err := netnode.Poll(ctx, 15*time.Second, 100*time.Millisecond, func() error {
		select {
		case err := <-t.serverExited:
			t.serverExited <- err
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("iperf3 server exited: %w: %s", err, t.serverOut.String())
		default:
		}
		return t.inPod(t.podA, func() error {
			c, err := net.DialTimeout("tcp", target, time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		})
	})
	if err != nil {
		return fmt.Errorf("iperf3 server in %s not reachable from %s: %w", t.podB, t.podA, err)
	}
	return nil
}

// inPod runs fn on a thread inside the named namespace.
func (t *topo) inPod(name string, fn func() error) error {
	return ns.WithNetNSPath(netnode.NSPath(name), func(ns.NetNS) error { return fn() })
}

// throughput runs the iperf3 client in pod A against pod B for secs seconds and
// returns what the receiver got, in Gbit/s.
func (t *topo) throughput(ctx context.Context, secs int) (float64, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", t.podA, "iperf3", "-c", podBAddr,
		"-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(secs), "-J")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if runErr != nil && ctx.Err() != nil {
		return 0, fmt.Errorf("iperf3 client: %w", ctx.Err())
	}
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return 0, fmt.Errorf("iperf3 client: %w (run: %v): %s", err, runErr, stderr.String())
	}
	if r.Error != "" || runErr != nil {
		if runErr == nil {
			runErr = errors.New("failed")
		}
		return 0, fmt.Errorf("iperf3 client: %w: %s %s", runErr, r.Error, stderr.String())
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 client: nothing received")
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}
