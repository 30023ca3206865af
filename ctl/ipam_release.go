package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/ipam"
)

func newIPAMReleaseCmd(g *globals) *cobra.Command {
	var ips []string
	var fromReport string
	cmd := &cobra.Command{
		Use:   "release --ip ADDR [--ip ADDR...] | --from-report FILE",
		Short: "Release addresses, or what an ipam check report found",
		Long: `--ip ADDR prints who holds the address and releases it, if that allocation still holds
it. An address not allocated is an error (exit 1); the others are still released.

--from-report FILE repairs what "tabbyctl ipam check -o FILE" found: it releases
leaked-allocation, outside-pool and missing-handle addresses and deletes stale-affinity
and missing-node affinities, each verified again first: an address now free or held by
another allocation (another handle or timestamp) is skipped. Other kinds (handle-count,
a block naming a missing node) are skipped: fix them by hand. Prints what was released
and what was skipped, and why.

Exactly one of --ip and --from-report must be given (else exit 2).`,
		Example: "  tabbyctl ipam release --ip 10.244.1.7\n  tabbyctl ipam release --from-report report.json",
		Args:    noArgs,
	}
	f := cmd.Flags()
	f.StringArrayVar(&ips, "ip", nil, "address to release (repeatable)")
	f.StringVar(&fromReport, "from-report", "", `release what this report of "tabbyctl ipam check" found`)
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		switch {
		case len(ips) > 0 && fromReport != "":
			return usageErrorf("give either --ip or --from-report, not both")
		case len(ips) == 0 && fromReport == "":
			return usageErrorf("release needs --ip ADDR or --from-report FILE")
		}
		if len(ips) > 0 {
			return releaseIPs(cmd, g, ips)
		}
		return releaseFromReport(cmd, g, fromReport)
	})
	return cmd
}

func releaseIPs(cmd *cobra.Command, g *globals, ips []string) error {
	var addrs []netip.Addr
	for _, s := range ips {
		a, err := parseIP(s)
		if err != nil {
			return err
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	a, err := g.allocator()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	failed := false
	for _, ip := range addrs {
		info, err := a.Lookup(ctx, ip)
		if err != nil {
			return fmt.Errorf("look up %s: %w", ip, err)
		}
		if !info.Allocated {
			fmt.Fprintf(g.stderr, "error: %s is not allocated; nothing to release\n", ip)
			failed = true
			continue
		}
		fmt.Fprintf(g.stdout, "%s is held by %s (handle %s, node %s, since %s)\n", ip, holder(info.Handle, info.Attrs),
			cell(info.Handle), cell(info.Attrs[ipam.AttrNode]), sinceStr(info.Since))
		// Only the allocation just printed is released: if the address changed hands
		// meanwhile, nothing is.
		err = a.ReleaseIPHeldBy(ctx, ip, info.Handle, info.Attrs[ipam.AttrTimestamp])
		switch {
		case errors.Is(err, ipam.ErrNotAllocated):
			fmt.Fprintf(g.stderr, "error: %s changed meanwhile (released, or reallocated); not released\n", ip)
			failed = true
		case err != nil:
			fmt.Fprintf(g.stderr, "error: release %s: %v\n", ip, err)
			failed = true
		default:
			fmt.Fprintf(g.stdout, "released %s\n", ip)
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// readReport reads a report written by ipam check.
func readReport(path string) (ipam.Report, error) {
	var rep ipam.Report
	b, err := os.ReadFile(path)
	if err != nil {
		return rep, fmt.Errorf("read report: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err = dec.Decode(&rep); err == nil && rep.Problems == nil {
		err = errors.New("it has no problems list")
	}
	if err != nil {
		return rep, fmt.Errorf("%s is not a report of tabbyctl ipam check: %w", path, err)
	}
	return rep, nil
}

// releasable says whether ReleaseProblems can repair p.
func releasable(p ipam.Problem) bool {
	switch p.Kind {
	case ipam.ProblemLeaked, ipam.ProblemOutsidePool, ipam.ProblemMissingHandle:
		return p.IP != ""
	case ipam.ProblemStaleAffinity, ipam.ProblemMissingNode:
		return p.Object != ""
	}
	return false
}

// problemRef names a problem in one line.
func problemRef(p ipam.Problem) string {
	switch {
	case p.IP != "":
		return fmt.Sprintf("%s %s (handle %s)", p.Kind, p.IP, cell(p.Handle))
	case p.Object != "":
		return fmt.Sprintf("%s %s", p.Kind, p.Object)
	}
	return fmt.Sprintf("%s %s", p.Kind, strings.TrimSpace(p.Block+" "+p.Handle))
}

func releaseFromReport(cmd *cobra.Command, g *globals, path string) error {
	rep, err := readReport(path)
	if err != nil {
		return err
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintf(g.stdout, "The report of %s lists no problems; nothing to release.\n", sinceStr(rep.Time))
		return nil
	}
	a, err := g.allocator()
	if err != nil {
		return err
	}
	released, skipped, failed := 0, 0, false
	for _, p := range rep.Problems {
		if !releasable(p) {
			fmt.Fprintf(g.stdout, "skipped %s: release does not repair this kind of problem\n", problemRef(p))
			skipped++
			continue
		}
		done, err := a.ReleaseProblems(cmd.Context(), []ipam.Problem{p})
		switch {
		case err != nil:
			if cmd.Context().Err() != nil {
				return err // interrupted: stop here
			}
			fmt.Fprintf(g.stderr, "error: %s: %v\n", problemRef(p), err)
			failed = true
		case len(done) == 0:
			fmt.Fprintf(g.stdout, "skipped %s: changed since the report\n", problemRef(p))
			skipped++
		default:
			for _, d := range done {
				fmt.Fprintln(g.stdout, d)
			}
			released++
		}
	}
	fmt.Fprintf(g.stdout, "Repaired %d of %s; skipped %d.\n", released, plural(len(rep.Problems), "problem", "problems"), skipped)
	if failed {
		return errReported
	}
	return nil
}
