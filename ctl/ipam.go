package ctl

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/ipam"
	"k8s.io/apimachinery/pkg/util/duration"
)

func newIPAMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "Show, check and repair IP address management",
		Long: `Show how the IP pools are used and who holds an address, check IPAM for leaked or
inconsistent allocations, and release addresses.`,
		Example: "  tabbyctl ipam show --show-blocks\n  tabbyctl ipam show --ip 10.244.1.7\n" +
			"  tabbyctl ipam check -o report.json\n  tabbyctl ipam release --from-report report.json",
	}
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	cmd.AddCommand(newIPAMShowCmd(g), newIPAMCheckCmd(g), newIPAMReleaseCmd(g))
	return cmd
}

// allocator is an IPAM allocator over the store, on the run's clock.
func (g *globals) allocator() (*ipam.Allocator, error) {
	s, err := g.getStore()
	if err != nil {
		return nil, err
	}
	return ipam.New(s, ipam.Options{Now: g.opts.Now}), nil
}

// parseIPAMFormat accepts table, yaml and json (ipam has no wide tables).
func parseIPAMFormat(s string) (format, error) {
	f, err := parseFormat(s)
	if err != nil || f == formatWide {
		return "", usageErrorf("unknown output format %q: use table, yaml or json", s)
	}
	return f, nil
}

// parseIP parses the value of --ip; a bad address is a failure (exit 1).
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("--ip %q is not an IP address", s)
	}
	return a.Unmap(), nil
}

func newIPAMShowCmd(g *globals) *cobra.Command {
	var output, ip string
	var showBlocks, showBorrowed bool
	cmd := &cobra.Command{
		Use:   "show [--show-blocks] [--show-borrowed] | --ip ADDR",
		Short: "Show IP pool usage, blocks, borrowed addresses, or who holds an address",
		Long: `Print every IP pool with its size and its addresses in use and free. --show-blocks adds
every block (pool, affine node, counts, addresses other nodes borrowed); --show-borrowed
adds every address held by a node other than its block's.

--ip ADDR says who holds one address instead: allocated or free, pool, block, the
block's node, the allocation's handle and attributes (node, namespace, pod, containerID,
...), since when, and whether it is borrowed or reserved.

-o yaml|json prints the raw data: the whole usage, or the address with --ip.`,
		Example: "  tabbyctl ipam show\n  tabbyctl ipam show --show-blocks --show-borrowed\n  tabbyctl ipam show --ip 10.244.1.7 -o yaml",
		Args:    noArgs,
	}
	f := cmd.Flags()
	f.BoolVar(&showBlocks, "show-blocks", false, "also print every block")
	f.BoolVar(&showBorrowed, "show-borrowed", false, "also print every borrowed address")
	f.StringVar(&ip, "ip", "", "print who holds this address")
	f.StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		format, err := parseIPAMFormat(output)
		if err != nil {
			return err
		}
		ipGiven := cmd.Flags().Changed("ip")
		if ipGiven && (showBlocks || showBorrowed) {
			return usageErrorf("--ip cannot be combined with --show-blocks or --show-borrowed")
		}
		if ipGiven {
			return showAddress(cmd, g, ip, format)
		}
		a, err := g.allocator()
		if err != nil {
			return err
		}
		u, err := a.Usage(cmd.Context())
		if err != nil {
			return fmt.Errorf("read IPAM usage: %w", err)
		}
		if format != formatTable {
			return writeDoc(g.stdout, format, u)
		}
		err = printPoolUsage(g.stdout, u.Pools)
		if err == nil && showBlocks {
			fmt.Fprintln(g.stdout)
			err = printBlockUsage(g.stdout, u.Blocks)
		}
		if err == nil && showBorrowed {
			fmt.Fprintln(g.stdout)
			err = printBorrowed(g.stdout, u.Borrowed, g.opts.Now())
		}
		return err
	})
	return cmd
}

// showAddress prints who holds the address of --ip.
func showAddress(cmd *cobra.Command, g *globals, ip string, f format) error {
	addr, err := parseIP(ip)
	if err != nil {
		return err
	}
	a, err := g.allocator()
	if err != nil {
		return err
	}
	info, err := a.Lookup(cmd.Context(), addr)
	if err != nil {
		return fmt.Errorf("look up %s: %w", addr, err)
	}
	if f != formatTable {
		return writeDoc(g.stdout, f, info)
	}
	return printAddressInfo(g.stdout, info, g.opts.Now())
}

// printTable prints a header and rows aligned as kubectl does, or the note when there
// are no rows.
func printTable(w io.Writer, note, header string, rows [][]string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, note)
		return err
	}
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func printPoolUsage(w io.Writer, pools []ipam.PoolUsage) error {
	var rows [][]string
	for _, p := range pools {
		name := p.Name
		if p.Disabled {
			name += " (disabled)"
		}
		total, free, size := strconv.Itoa(p.Total), strconv.Itoa(p.Free), float64(p.Total)
		// Usage caps a pool's size at 2^62; say how big a larger (IPv6) pool really is.
		if pfx, err := netip.ParsePrefix(p.CIDR); err == nil && pfx.Addr().BitLen()-pfx.Bits() > 62 {
			bits := pfx.Addr().BitLen() - pfx.Bits()
			size, total, free = math.Ldexp(1, bits), fmt.Sprintf("2^%d", bits), strings.TrimSuffix(fmt.Sprintf("2^%d-%d", bits, p.InUse), "-0")
		}
		rows = append(rows, []string{name, p.CIDR, total, withPercent(strconv.Itoa(p.InUse), float64(p.InUse), size),
			withPercent(free, size-float64(p.InUse), size)})
	}
	return printTable(w, "No IP pools found.", "POOL\tCIDR\tTOTAL\tIN USE\tFREE", rows)
}

// withPercent is "n (p%)", as calicoctl shows counts.
func withPercent(n string, part, whole float64) string {
	if whole <= 0 {
		return n
	}
	return fmt.Sprintf("%s (%.0f%%)", n, part*100/whole)
}

func printBlockUsage(w io.Writer, blocks []ipam.BlockUsage) error {
	var rows [][]string
	for _, b := range blocks {
		size := float64(b.Total)
		rows = append(rows, []string{b.CIDR, cell(b.Pool), cell(b.Node), strconv.Itoa(b.Total),
			withPercent(strconv.Itoa(b.InUse), float64(b.InUse), size),
			withPercent(strconv.Itoa(b.Free), float64(b.Free), size), strconv.Itoa(b.Borrowed)})
	}
	return printTable(w, "No blocks allocated.", "BLOCK\tPOOL\tNODE\tTOTAL\tIN USE\tFREE\tBORROWED", rows)
}

func printBorrowed(w io.Writer, borrowed []ipam.BorrowedAddress, now time.Time) error {
	var rows [][]string
	for _, b := range borrowed {
		rows = append(rows, []string{b.IP, b.Block, cell(b.BlockNode), cell(b.Node), cell(b.Handle),
			sinceStr(b.Since), age(b.Since, now)})
	}
	return printTable(w, "No borrowed addresses.", "IP\tBLOCK\tBLOCK NODE\tBORROWING NODE\tHANDLE\tSINCE\tAGE", rows)
}

func sinceStr(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return t.UTC().Format(time.RFC3339)
}

// age is how long ago t was, as kubectl shows ages.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(max(now.Sub(t), 0))
}

// holder says who holds an allocation: a pod, a VM, or just a handle.
func holder(handle string, attrs map[string]string) string {
	switch {
	case attrs[ipam.AttrPod] != "":
		return fmt.Sprintf("pod %s/%s", attrs[ipam.AttrNamespace], attrs[ipam.AttrPod])
	case attrs[ipam.AttrDomain] != "":
		return "VM " + attrs[ipam.AttrDomain]
	case handle != "":
		return "handle " + handle
	}
	return "an allocation without a handle"
}

func printAddressInfo(w io.Writer, info ipam.AddressInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(v)) }
	or := func(s, none string) string { return cmp.Or(s, "<none> ("+none+")") }
	row("IP", info.IP)
	row("Status", map[bool]string{true: "allocated", false: "free"}[info.Allocated])
	row("Pool", or(info.Pool, "in no IP pool"))
	row("Block", or(info.Block, "no block holds this address"))
	if info.Block != "" {
		row("Block node", info.BlockNode)
	}
	if info.Allocated {
		row("Held by", holder(info.Handle, info.Attrs))
		row("Handle", info.Handle)
		label := "Attributes:"
		for _, k := range sortedKeys(info.Attrs) {
			if k == ipam.AttrTimestamp {
				continue // shown as Since
			}
			fmt.Fprintf(tw, "%s\t%s=%s\n", label, k, cell(info.Attrs[k]))
			label = ""
		}
		if label != "" {
			row("Attributes", "")
		}
		row("Since", sinceStr(info.Since)+" ("+age(info.Since, now)+" ago)")
		borrowed := "no"
		if info.Borrowed {
			borrowed = fmt.Sprintf("yes: node %s holds it in a block affine to %s", info.Attrs[ipam.AttrNode],
				cmp.Or(info.BlockNode, "no node"))
		}
		row("Borrowed", borrowed)
	}
	row("Reserved", map[bool]string{true: "yes", false: "no"}[info.Reserved])
	return tw.Flush()
}

func newIPAMCheckCmd(g *globals) *cobra.Command {
	var interval time.Duration
	var report string
	cmd := &cobra.Command{
		Use:   "check [--interval DURATION] [-o|--report FILE]",
		Short: "Look for leaked allocations and IPAM inconsistencies",
		Long: `Check every block, handle and affinity for:

  leaked-allocation  an address whose pod or workload endpoint no longer exists
  outside-pool       an address allocated in a block no IP pool contains
  missing-handle     an address whose IPAMHandle does not exist
  handle-count       an IPAMHandle whose counts differ from the blocks
  missing-node       a block or affinity naming a node that does not exist
  stale-affinity     an affinity whose block is gone or belongs to another node

IPAM changes while it is checked: a CNI ADD half-way through has an address but no
workload endpoint yet. So the check makes two observations --interval apart and reports
only the problems it saw both times, about the same allocation (same address, handle
and timestamp). When the first observation finds no problem, there is no second.

Prints the counts, the problems of each kind, and each problem. -o/--report FILE also
writes the report as JSON to FILE, for "tabbyctl ipam release --from-report FILE".

The exit code is 0 whenever the check ran, whatever it found ("N problems found"); 1
when it could not run or write the report. Scripts count the problems of the report:
jq '.problems | length' FILE.`,
		Example: "  tabbyctl ipam check\n  tabbyctl ipam check --interval 30s -o report.json",
		Args:    noArgs,
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", 5*time.Second, "time between the two observations")
	f.StringVarP(&report, "report", "o", "", "write the report as JSON to FILE")
	f.StringVar(&report, "output", "", "same as --report (calicoctl's spelling)")
	_ = f.MarkHidden("output")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if interval <= 0 {
			return usageErrorf("--interval must be positive, got %s", interval)
		}
		a, err := g.allocator()
		if err != nil {
			return err
		}
		rep, err := a.Check(cmd.Context(), ipam.CheckOptions{Interval: interval})
		if err != nil {
			return fmt.Errorf("check IPAM: %w", err)
		}
		printReport(g.stdout, rep)
		if report == "" {
			return nil
		}
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode the report: %w", err)
		}
		if err := os.WriteFile(report, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
		fmt.Fprintf(g.stdout, "Report written to %s.\n", report)
		return nil
	})
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func printReport(w io.Writer, rep ipam.Report) {
	fmt.Fprintf(w, "Checked %s, %s in use, %s (two observations %s apart).\n",
		plural(rep.Blocks, "block", "blocks"), plural(rep.InUse, "address", "addresses"),
		plural(rep.Handles, "handle", "handles"), rep.Interval)
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "No problems found.")
		return
	}
	fmt.Fprintf(w, "%s found:\n", plural(len(rep.Problems), "problem", "problems"))
	byKind := map[string]int{}
	for _, p := range rep.Problems {
		byKind[p.Kind]++
	}
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	for _, k := range sortedKeys(byKind) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, byKind[k])
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "%s: %s\n", p.Kind, p.Detail)
		var fields []string
		for _, kv := range [][2]string{{"ip", p.IP}, {"block", p.Block}, {"node", p.Node}, {"handle", p.Handle},
			{"object", p.Object}, {"since", p.Since}} {
			if kv[1] != "" {
				fields = append(fields, kv[0]+"="+kv[1])
			}
		}
		if len(fields) > 0 {
			fmt.Fprintf(w, "    %s\n", strings.Join(fields, " "))
		}
	}
}
