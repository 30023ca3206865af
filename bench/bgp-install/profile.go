package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// profileRound runs one more round of ours (not counted) with `perf record -g` on
// tabby-node, keeps the profile in file, and returns the share of the profile's
// samples in the functions of profileStages.
func (s *setup) profileRound(ctx context.Context, file string) (*side, string, error) {
	ps, err := nsProcs(s.node.Name)
	if err != nil {
		return nil, "", err
	}
	pid := 0
	for _, p := range ps {
		if p.comm == "tabby-node" {
			pid = p.pid
		}
	}
	if pid == 0 {
		return nil, "", errors.New("no tabby-node process in the node namespace")
	}
	_ = os.Remove(file)
	// -N: no copy of the binaries into ~/.debug.
	perf := exec.Command("perf", "record", "-N", "-F", "999", "-g", "-p", fmt.Sprint(pid), "-o", file)
	var perfOut strings.Builder
	perf.Stdout, perf.Stderr = &perfOut, &perfOut
	if err := perf.Start(); err != nil {
		return nil, "", fmt.Errorf("perf record: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- perf.Wait() }()
	stopPerf := func() error {
		_ = perf.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			// perf exits by the signal, after writing the file.
			if err != nil && !strings.Contains(perfOut.String(), "Captured and wrote") {
				return fmt.Errorf("perf record: %w: %s", err, perfOut.String())
			}
			return nil
		case <-time.After(30 * time.Second):
			_ = perf.Process.Kill()
			<-done
			return errors.New("perf record did not stop")
		}
	}
	// perf writes its header once it is attached.
	if err := netnode.Poll(ctx, 10*time.Second, 20*time.Millisecond, func() error {
		if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
			return fmt.Errorf("perf record not started: %s", perfOut.String())
		}
		return nil
	}); err != nil {
		return nil, "", errors.Join(err, stopPerf())
	}
	step(" profile round: perf record -g on tabby-node (pid %d)", pid)
	sd, err := s.ours(ctx)
	if perr := stopPerf(); err == nil {
		err = perr
	}
	if err != nil {
		return nil, "", err
	}
	if err := s.resetOurs(ctx); err != nil {
		return nil, "", err
	}
	out, err := netnode.Run(ctx, "perf", "report", "-i", file, "--stdio", "--children", "-g", "none", "--sort", "sym", "--percent-limit", "0.2")
	if err != nil {
		return nil, "", err
	}
	return sd, summarise(out), nil
}

// profileStages are the functions the profile summary reports, with what they stand
// for: the share of tabby-node's samples in each and its callees.
var profileStages = []struct{ sym, what string }{
	{"felix.(*loop).apply", "felix's apply loop, all of it"},
	{"felix/dataplane.(*RouteTable).Apply", "  route writes (RouteTable.Apply)"},
	{"netlink.(*Handle).RouteAdd", "    of which netlink RouteAdd, one request + ack per route"},
	{"felix.(*loop).take", "  the learned set taken and diffed (loop.take, Graph.SetLearned)"},
	{"bgp/controller.(*Learned).Run", "Learned: events in, whole-set snapshots out (Learned.Run)"},
	{"bgp.(*goBGP).onBestPath", "speaker: gobgp best paths to events (goBGP.onBestPath)"},
	{"server.(*BgpServer).handleFSMMessage", "gobgp: UPDATEs processed (BgpServer.handleFSMMessage)"},
	{"server.(*BgpServer).ListPeer.func1", "gobgp: ListPeer with advertised counts (bgp.Peers: NodeStatus writer, local API)"},
	{"table.(*Path).String", "gobgp: Path.String for debug lines not printed (filterPathFromSourcePeer)"},
	{"runtime.gcBgMarkWorker", "Go GC mark workers"},
}

// summarise picks profileStages out of perf report --children.
func summarise(report string) string {
	var b strings.Builder
	samples := ""
	share := map[string]string{}
	for _, l := range strings.Split(report, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "# Samples:") {
			samples = strings.TrimSpace(strings.TrimPrefix(t, "# Samples:"))
		}
		f := strings.Fields(t)
		if len(f) < 4 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		sym := f[len(f)-1]
		for _, st := range profileStages {
			if strings.HasSuffix(sym, st.sym) {
				if _, ok := share[st.sym]; !ok {
					share[st.sym] = f[0]
				}
			}
		}
	}
	fmt.Fprintf(&b, "    tabby-node's samples (%s, 999 Hz) by function with its callees:\n", samples)
	for _, st := range profileStages {
		pct, ok := share[st.sym]
		if !ok {
			pct = "<0.2%"
		}
		fmt.Fprintf(&b, "      %7s  %s\n", pct, st.what)
	}
	return b.String()
}
