package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/tabbynet/tabby/bench/internal/benchutil"
)

// measured is one measured pod: when its ADD started, its block, and when
// the block's route was in B's kernel.
type measured struct {
	pod   string
	block netip.Prefix
	t0, b time.Time
}

// logLine is what the breakdown reads of a debug log line (tabby-cni, tabby-node, and
// gobgp's through tabby-node). Timestamps are ISO 8601 with milliseconds.
type logLine struct {
	TS     string `json:"ts"`
	Msg    string `json:"msg"`
	Cmd    string `json:"cmd"`
	Pod    string `json:"pod"`
	Block  string `json:"block"`
	Prefix string `json:"prefix"`
	NLRI   []struct {
		NLRI struct {
			Prefix string `json:"prefix"`
		} `json:"NLRI"`
	} `json:"nlri"`
}

// readLog calls fn with every JSON line of path and its time.
func readLog(path string, fn func(l *logLine, at time.Time)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.TS == "" {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil {
			continue
		}
		fn(&l, at)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// stage is one leg of the way from the ADD to B's kernel.
type stage struct {
	name string
	ds   []time.Duration
}

// breakdown splits each measured pod's time into its stages from the debug logs of
// A's tabby-cni and tabby-node and B's tabby-node (millisecond timestamps): the exec
// until the plugin starts, the plugin until its block is claimed, A's controller until
// the prefix is advertised, the wire until B's speaker receives it, B's hand-off to
// felix, and felix until the route's netlink event. Pods with a stage missing in the
// logs are left out.
func breakdown(cniLog, aLog, bLog, namespace string, ms []measured) ([]stage, error) {
	start, claim := map[string]time.Time{}, map[string]time.Time{}
	err := readLog(cniLog, func(l *logLine, at time.Time) {
		if l.Cmd != "ADD" {
			return
		}
		switch l.Msg {
		case "start":
			start[l.Pod] = at
		case "claimed block":
			claim[l.Pod] = at
		}
	})
	if err != nil {
		return nil, err
	}
	advertised := map[string]time.Time{}
	err = readLog(aLog, func(l *logLine, at time.Time) {
		if _, ok := advertised[l.Prefix]; l.Msg == "advertised" && !ok {
			advertised[l.Prefix] = at
		}
	})
	if err != nil {
		return nil, err
	}
	received := map[string]time.Time{}
	var handedOn []time.Time
	err = readLog(bLog, func(l *logLine, at time.Time) {
		switch l.Msg {
		case "received update":
			for _, n := range l.NLRI {
				if _, ok := received[n.NLRI.Prefix]; !ok {
					received[n.NLRI.Prefix] = at
				}
			}
		case "learned routes handed on":
			handedOn = append(handedOn, at)
		}
	})
	if err != nil {
		return nil, err
	}
	st := []stage{{name: "exec of ip netns exec, cnitool, tabby-cni"}, {name: "plugin start -> block claimed (IPAM)"},
		{name: "block claimed -> advertised on A"}, {name: "advertised on A -> received on B"},
		{name: "received on B -> handed to felix"}, {name: "handed to felix -> route in kernel"},
		{name: "block claimed -> route in B's kernel"}}
	for _, m := range ms {
		pod := namespace + "/" + m.pod
		pfx := m.block.String()
		s, c, adv, rcv := start[pod], claim[pod], advertised[pfx], received[pfx]
		if s.IsZero() || c.IsZero() || adv.IsZero() || rcv.IsZero() {
			continue
		}
		// The first hand-off in the millisecond of the receipt or later.
		i, _ := slices.BinarySearchFunc(handedOn, rcv, func(a, b time.Time) int { return a.Compare(b) })
		if i == len(handedOn) {
			continue
		}
		h := handedOn[i]
		for k, d := range []time.Duration{s.Sub(m.t0), c.Sub(s), adv.Sub(c), rcv.Sub(adv), h.Sub(rcv), m.b.Sub(h), m.b.Sub(c)} {
			st[k].ds = append(st[k].ds, d)
		}
	}
	if len(st[0].ds) == 0 {
		return nil, fmt.Errorf("no measured pod found in the logs")
	}
	return st, nil
}

// printBreakdown prints the stages' p50/p90/p99.
func printBreakdown(st []stage) {
	fmt.Printf("  breakdown from the debug logs (ms timestamps, so +-1ms each; n=%d): p50 / p90 / p99\n", len(st[0].ds))
	for _, s := range st {
		p := func(q float64) float64 { return benchutil.Ms(benchutil.Percentile(s.ds, q)) }
		fmt.Printf("    %-44s %6.1f / %6.1f / %6.1f ms\n", s.name, p(50), p(90), p(99))
	}
}
