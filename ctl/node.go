package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/agent/localapi"
	"k8s.io/apimachinery/pkg/util/duration"
)

// nodeRequestTimeout bounds one request to the local agent.
const nodeRequestTimeout = 10 * time.Second

// newNodeCmd is "tabbyctl node": the local tabby-node agent, through its unix socket.
func newNodeCmd(g *globals) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Show the state of the tabby-node agent on this node",
		Long: `Ask the tabby-node agent running on this machine, through its local unix socket, what it
is doing: its status, its endpoints and the routes it programs. Nothing is read from the
cluster; run it on the node (it needs permission to open the socket, usually root).`,
		Example: "  tabbyctl node status\n  tabbyctl node status -o json\n  tabbyctl node routes --socket /var/run/tabby/tabby-node.sock",
	}
	cmd.PersistentFlags().StringVar(&socket, "socket", localapi.DefaultSocket, "unix socket of the tabby-node agent")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	client := func() *localapi.Client { return localapi.NewClient(socket, nodeRequestTimeout) }
	cmd.AddCommand(newNodeStatusCmd(g, client), newNodeRoutesCmd(g, client), newNodeDiagsCmd(g, client))
	return cmd
}

// parseNodeFormat accepts table (a human summary), yaml and json.
func parseNodeFormat(s string) (format, error) {
	f, err := parseFormat(s)
	if err != nil || f == formatWide {
		return "", usageErrorf("unknown output format %q: use table, yaml or json", s)
	}
	return f, nil
}

func newNodeStatusCmd(g *globals, client func() *localapi.Client) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the agent's status: node, version, uptime, readiness, endpoints, routes",
		Long: `Print the local tabby-node's status: its node name, version and uptime, whether it is
ready (and why not), the node address and how it was found, the datastore check, the
dataplane's sync state, the route counts, and a table of the workload endpoints on this
node with whether each is programmed. -o json or -o yaml prints everything the agent
reports.`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table (a summary), yaml or json")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		return askAgent(cmd, g, output, client().Status, func(st *localapi.Status) any { return st },
			func(st *localapi.Status) error { return printNodeStatus(g.stdout, st, g.opts.Now()) })
	})
	return cmd
}

func newNodeRoutesCmd(g *globals, client func() *localapi.Client) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List the kernel routes the agent programs on this node",
		Long: `List the routes the local tabby-node owns in the kernel: a /32 to every local workload
(kind local), a blackhole for every block affine to the node (kind blackhole) and the
routes learned over BGP (kind learned), with their route protocol number.`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		return askAgent(cmd, g, output, client().Routes,
			func(rs []localapi.Route) any {
				if rs == nil {
					rs = []localapi.Route{}
				}
				return localapi.RouteList{Routes: rs}
			},
			func(rs []localapi.Route) error { return printNodeRoutes(g.stdout, rs) })
	})
	return cmd
}

// askAgent makes one request to the local agent and prints the answer: as a document
// (doc) for -o yaml|json, else as a table (table).
func askAgent[T any](cmd *cobra.Command, g *globals, output string, call func(context.Context) (T, error),
	doc func(T) any, table func(T) error) error {
	f, err := parseNodeFormat(output)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), nodeRequestTimeout)
	defer cancel()
	v, err := call(ctx)
	if err != nil {
		return err
	}
	if f != formatTable {
		return writeDoc(g.stdout, f, doc(v))
	}
	return table(v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printNodeStatus prints the human summary of tabbyctl node status.
func printNodeStatus(w io.Writer, st *localapi.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	line("Node", st.Node)
	line("Version", st.Version)
	line("Uptime", st.Uptime)
	ready := yesNo(st.Ready)
	if !st.Ready && len(st.NotReady) > 0 {
		ready += " (" + strings.Join(st.NotReady, "; ") + ")"
	}
	line("Ready", ready)
	ip := dash(st.NodeIP)
	if st.NodeIPSource != "" {
		ip += " (" + st.NodeIPSource + ")"
	}
	line("Node IP", ip)
	line("Registered", yesNo(st.Registered))
	ds := "reachable"
	if !st.Datastore.Reachable {
		ds = "unreachable"
		if st.Datastore.Error != "" {
			ds += ": " + st.Datastore.Error
		}
	}
	line("Datastore", ds)
	sync := "not in sync"
	if st.Felix.InSync {
		sync = "in sync"
	}
	if st.Felix.LastApply != nil {
		sync += ", last apply " + duration.HumanDuration(max(now.Sub(*st.Felix.LastApply), 0)) + " ago"
	}
	line("Dataplane", sync)
	if st.Felix.LastError != "" {
		line("Last error", st.Felix.LastError)
	}
	r := st.Felix.Routes
	line("Routes", fmt.Sprintf("%d local, %d blackhole, %d learned", r.Local, r.Blackhole, r.Learned))
	programmed := 0
	for _, e := range st.Felix.Endpoints {
		if e.Programmed {
			programmed++
		}
	}
	line("Endpoints", fmt.Sprintf("%d (%d programmed)", len(st.Felix.Endpoints), programmed))
	nodePolicyLines(line, st.Policy)
	nodeBGPLines(line, st.BGP)
	nodeVMLine(line, st.VMs) // vm.go
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printNodeEndpoints(w, st.Felix.Endpoints, st.Policy != nil && st.Policy.Enabled); err != nil {
		return err
	}
	return printNodeBGPPeers(w, st.BGP, now)
}

// nodePolicyLines adds the policy lines of tabbyctl node status.
func nodePolicyLines(line func(k, v string), p *localapi.PolicyStatus) {
	switch {
	case p == nil:
		line("Policy", "unknown (the agent does not report policy)")
		return
	case !p.Enabled:
		line("Policy", "disabled (--policy=false): every endpoint's traffic passes unpoliced")
		return
	}
	state := "programmed"
	if !p.Programmed {
		state = "not programmed"
	}
	line("Policy", fmt.Sprintf("%s: %s, %s, enforced on %s (%d not)", state,
		plural(len(p.Sources), "object", "objects"), plural(p.Rules, "rule", "rules"),
		plural(p.Enforced, "endpoint", "endpoints"), p.NotEnforced))
	if p.Error != "" {
		line("Policy issue", p.Error)
	}
}

// printNodeEndpoints prints the endpoints table of tabbyctl node status, if any.
func printNodeEndpoints(w io.Writer, eps []localapi.Endpoint, policy bool) error {
	if len(eps) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	if !policy {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tWORKLOAD\tINTERFACE\tIPS\tPROGRAMMED\tMESSAGE")
		for _, e := range eps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Namespace, e.Name, dash(e.Workload), dash(e.Interface),
				dash(strings.Join(e.IPs, ",")), yesNo(e.Programmed), dash(e.Message))
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tWORKLOAD\tINTERFACE\tIPS\tPROGRAMMED\tPOLICY\tMESSAGE")
	for _, e := range eps {
		msg := e.Message
		if e.PolicyMessage != "" {
			msg = strings.Join(nonEmpty(msg, "policy: "+e.PolicyMessage), "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Namespace, e.Name, dash(e.Workload), dash(e.Interface),
			dash(strings.Join(e.IPs, ",")), yesNo(e.Programmed), yesNo(e.PolicyEnforced), dash(msg))
	}
	return tw.Flush()
}

// printNodeRoutes prints the table of tabbyctl node routes.
func printNodeRoutes(w io.Writer, rs []localapi.Route) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tKIND\tDEVICE\tVIA\tPROTOCOL")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", r.Dst, r.Kind, dash(r.Dev), dash(strings.Join(r.Via, ",")), r.Protocol)
	}
	return tw.Flush()
}

// nonEmpty returns the non-empty strings of ss.
func nonEmpty(ss ...string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
