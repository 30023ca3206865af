package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/tabbynet/tabby/bench/internal/benchutil"
)

// debugRound restarts tabby-node at debug level (and leaves it so), runs one more round
// of ours (not counted) and splits it from the log.
func (s *setup) debugRound(ctx context.Context) (*side, *timeline, error) {
	restart := func(level string) error {
		if err := s.node.Stop(); err != nil {
			return err
		}
		if err := s.node.Start(nodeArgs(level)...); err != nil {
			return err
		}
		return s.waitNode(ctx)
	}
	step(" breakdown round: tabby-node at debug level")
	if err := restart("debug"); err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(s.node.Log)
	if err != nil {
		return nil, nil, err
	}
	sd, err := s.ours(ctx)
	if err != nil {
		return nil, nil, err
	}
	tl, terr := readTimeline(s.node.Log, fi.Size(), sd)
	if err := s.resetOurs(ctx); err != nil {
		return nil, nil, err
	}
	return sd, tl, terr
}

// timeline is what tabby-node's debug log says of one round, relative to Established.
type timeline struct {
	est                  time.Time
	updates, nlri        int           // UPDATE messages with prefixes, and their prefixes
	firstUpd, lastUpd    time.Duration // first and last UPDATE received
	eor                  time.Duration // End-of-RIB received (-1 if not logged)
	handoffs             []handoff     // Learned -> felix
	applies              []apply       // felix
	firstApply, lastDone time.Duration // the first apply's start, the last one's end
}

type handoff struct {
	at     time.Duration
	routes int
}

type apply struct {
	at      time.Duration // logged when done
	written int
	took    time.Duration
}

// logLine is what the breakdown reads of a tabby-node log line (ISO 8601 times with
// milliseconds).
type logLine struct {
	TS      string            `json:"ts"`
	Msg     string            `json:"msg"`
	NLRI    []json.RawMessage `json:"nlri"`
	Routes  *int              `json:"routes"`
	Written *int              `json:"routesWritten"`
	Took    float64           `json:"took"` // seconds
}

// readTimeline reads path from offset: the lines logged between the round's
// Established and its last route (plus a second).
func readTimeline(path string, offset int64, sd *side) (*timeline, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	// Log times have millisecond precision: start a millisecond early.
	from, to := sd.est.Truncate(time.Millisecond), sd.last.Add(time.Second)
	tl := &timeline{est: sd.est, eor: -1, firstUpd: -1}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.TS == "" {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		rel := at.Sub(sd.est)
		switch {
		case l.Msg == "received update" && len(l.NLRI) > 0:
			if tl.firstUpd < 0 {
				tl.firstUpd = rel
			}
			tl.lastUpd = rel
			tl.updates++
			tl.nlri += len(l.NLRI)
		case l.Msg == "end-of-rib received" && tl.eor < 0:
			tl.eor = rel
		case l.Msg == "learned routes handed on" && l.Routes != nil:
			tl.handoffs = append(tl.handoffs, handoff{at: rel, routes: *l.Routes})
		case l.Msg == "applied" && l.Written != nil:
			took := time.Duration(l.Took * float64(time.Second))
			tl.applies = append(tl.applies, apply{at: rel, written: *l.Written, took: took})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if tl.updates == 0 || len(tl.handoffs) == 0 || len(tl.applies) == 0 {
		return nil, fmt.Errorf("the log has %d UPDATEs, %d hand-offs and %d applies in the round: is it at debug level?",
			tl.updates, len(tl.handoffs), len(tl.applies))
	}
	tl.firstApply = tl.applies[0].at - tl.applies[0].took
	tl.lastDone = tl.applies[len(tl.applies)-1].at
	return tl, nil
}

// print prints the timeline.
func (tl *timeline) print(sd *side, n int) {
	sec := func(d time.Duration) string { return fmt.Sprintf("+%.2fs", d.Seconds()) }
	fmt.Printf("    from Established (log times, +-1 ms):\n")
	eor := "not logged"
	if tl.eor >= 0 {
		eor = sec(tl.eor)
	}
	fmt.Printf("      UPDATEs received (gobgp):   %d with %d prefixes, first %s, last %s, End-of-RIB %s\n",
		tl.updates, tl.nlri, sec(tl.firstUpd), sec(tl.lastUpd), eor)

	total, full := 0, -1
	var gaps []time.Duration
	for i, h := range tl.handoffs {
		total += h.routes
		if full < 0 && h.routes >= n {
			full = i
		}
		if i > 0 {
			gaps = append(gaps, h.at-tl.handoffs[i-1].at)
		}
	}
	first := tl.handoffs[0]
	fullS := "never"
	if full >= 0 {
		fullS = fmt.Sprintf("%s (hand-off %d)", sec(tl.handoffs[full].at), full+1)
	}
	fmt.Printf("      Learned -> felix:           %d hand-offs of the whole learned set, first %s with %d routes, the first with all %s;\n",
		len(tl.handoffs), sec(first.at), first.routes, fullS)
	fmt.Printf("                                  %d routes handed on in all (%.0f per new route), interval p50 %.0f ms, max %.0f ms\n",
		total, float64(total)/float64(n), benchutil.Ms(benchutil.Percentile(gaps, 50)), benchutil.Ms(benchutil.Percentile(gaps, 100)))

	written, busy := 0, time.Duration(0)
	var tooks []time.Duration
	var sizes []int
	for _, a := range tl.applies {
		written += a.written
		busy += a.took
		tooks = append(tooks, a.took)
		sizes = append(sizes, a.written)
	}
	slices.Sort(sizes)
	window := tl.lastDone - tl.firstApply
	fmt.Printf("      felix applies:              %d writing %d routes (p50 %d, max %d per apply), from %s to %s: busy %.2fs of %.2fs (%.0f%%), longest %.0f ms, %.0f routes/s while busy\n",
		len(tl.applies), written, sizes[len(sizes)/2], sizes[len(sizes)-1], sec(tl.firstApply), sec(tl.lastDone),
		busy.Seconds(), window.Seconds(), 100*busy.Seconds()/window.Seconds(), benchutil.Ms(benchutil.Percentile(tooks, 100)),
		float64(written)/busy.Seconds())
	fmt.Printf("      last UPDATE -> all in kernel: %.2fs; first hand-off with all -> all in kernel: %.2fs\n",
		(sd.toKernel() - tl.lastUpd).Seconds(), func() float64 {
			if full < 0 {
				return -1
			}
			return (sd.toKernel() - tl.handoffs[full].at).Seconds()
		}())
}
