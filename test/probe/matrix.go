package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Cell is one probe of a matrix and the verdict the caller expects.
type Cell struct {
	From  string // source network namespace
	To    netip.Addr
	Proto Proto
	Port  uint16
	Want  bool // expected allowed
}

func (c Cell) String() string {
	return fmt.Sprintf("%s -> %s %s/%d", c.From, c.To, c.Proto, c.Port)
}

// Outcome is what the matrix saw for a cell.
type Outcome struct {
	Cell
	Result        // the last probe's
	First  Result // the first pass's
	Again  bool   // probed a second time with the long timeout
	Err    error  // the probe could not be made
}

// OK reports whether the cell was probed and matched what the caller expects.
func (o Outcome) OK() bool { return o.Err == nil && o.Allowed == o.Want }

// MatrixOptions tune Matrix; zero values take the defaults.
type MatrixOptions struct {
	Short    time.Duration // first pass timeout (default 300 ms)
	Long     time.Duration // timeout of the second look at disagreeing cells (default 2 s)
	Parallel int           // probes in flight at most (default 512)
}

// Matrix probes every cell concurrently with the short timeout, then probes again,
// with the long timeout, every cell whose result disagrees with Cell.Want (or that
// failed), so a slow answer on a loaded machine is not taken for a denial and every
// unexpected denial is confirmed. Outcomes are in the order of cells. The error joins
// the errors of probes that could not be made (their cells carry them too).
func (p *Prober) Matrix(ctx context.Context, cells []Cell, opts MatrixOptions) ([]Outcome, error) {
	if opts.Short <= 0 {
		opts.Short = 300 * time.Millisecond
	}
	if opts.Long <= 0 {
		opts.Long = 2 * time.Second
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 512
	}
	out := make([]Outcome, len(cells))
	all := make([]int, len(cells))
	for i, c := range cells {
		out[i].Cell = c
		all[i] = i
	}
	p.pass(ctx, out, all, opts.Short, opts.Parallel)
	var again []int
	for i := range out {
		out[i].First = out[i].Result
		if !out[i].OK() {
			again = append(again, i)
		}
	}
	for _, i := range again {
		out[i].Again, out[i].Err = true, nil
	}
	p.pass(ctx, out, again, opts.Long, opts.Parallel)
	var errs []error
	for _, o := range out {
		if o.Err != nil && len(errs) < 5 {
			errs = append(errs, o.Err)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// pass probes out[idx...] with timeout, at most parallel at once.
func (p *Prober) pass(ctx context.Context, out []Outcome, idx []int, timeout time.Duration, parallel int) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, i := range idx {
		if ctx.Err() != nil {
			out[i].Err = ctx.Err()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := out[i].Cell
			out[i].Result, out[i].Err = p.Probe(ctx, c.From, c.To, c.Proto, c.Port, timeout)
		}()
	}
	wg.Wait()
}
