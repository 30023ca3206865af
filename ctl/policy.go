package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/agent/localapi"
)

// newPolicyCmd is "tabbyctl policy": the local agent's policy tools, through its socket.
func newPolicyCmd(g *globals) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain policy verdicts and watch policy drops on this node",
		Long: `Ask the tabby-node agent running on this machine, through its local unix socket, how its
eBPF datapath treats traffic: "explain" runs the programs attached to the endpoints'
interfaces on a synthetic packet and names the policy rule that decided; "drops"
streams the packets the datapath drops. Run it on the node of the destination endpoint
(it needs permission to open the socket, usually root).`,
		Example: "  tabbyctl policy explain --from prod/web-0 --to prod/db-0:5432/tcp\n" +
			"  tabbyctl policy explain --from 192.0.2.7 --to prod/web-0:443\n  tabbyctl policy drops -o json",
	}
	cmd.PersistentFlags().StringVar(&socket, "socket", localapi.DefaultSocket, "unix socket of the tabby-node agent")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	cmd.AddCommand(newPolicyExplainCmd(g, &socket), newPolicyDropsCmd(g, &socket))
	return cmd
}

// parseExplainTo reads --to: <ns/endpoint>:<port>[/<proto>] or <ns/endpoint>:icmp.
func parseExplainTo(s, ns string) (ep string, port uint16, proto string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", 0, "", usageErrorf("--to %q: want <namespace/endpoint>:<port>/<protocol>, e.g. prod/db-0:5432/tcp", s)
	}
	ep, rest := qualify(s[:i], ns), s[i+1:]
	if strings.EqualFold(rest, "icmp") || strings.EqualFold(rest, "0/icmp") {
		return ep, 0, "ICMP", nil
	}
	ps, proto, _ := strings.Cut(rest, "/")
	if proto == "" {
		proto = "TCP"
	}
	proto = strings.ToUpper(proto)
	switch proto {
	case "TCP", "UDP", "SCTP":
	case "ICMP":
		return ep, 0, proto, nil
	default:
		return "", 0, "", usageErrorf("--to %q: protocol %q: use tcp, udp, sctp or icmp", s, proto)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return "", 0, "", usageErrorf("--to %q: port %q: want 1-65535", s, ps)
	}
	return ep, uint16(n), proto, nil
}

// qualify puts an endpoint name without a namespace into ns.
func qualify(ep, ns string) string {
	if strings.Contains(ep, "/") {
		return ep
	}
	return ns + "/" + ep
}

func newPolicyExplainCmd(g *globals, socket *string) *cobra.Command {
	var from, to, output string
	cmd := &cobra.Command{
		Use:   "explain --from <namespace/endpoint|ip> --to <namespace/endpoint>:<port>/<protocol>",
		Short: "Explain what the datapath does with a new flow to a local endpoint, and why",
		Long: `Run the policy programs attached on this node on a synthetic packet opening a flow from
--from to --to, in their explain mode (no conntrack entry, counter or drop event), and
print the verdict with the policy and rule that decided it: the destination's ingress
program and, when the source is an endpoint of this node too, the source's egress
program. --from is an endpoint (namespace/name, WorkloadEndpoint or pod name) or an
IPv4 address; --to an endpoint of this node with the destination port and protocol
(tcp, udp, sctp; tcp when left out; <endpoint>:icmp for ICMP). An endpoint without a
namespace is in -n's namespace, else "default".

The exit code is 0 when the flow was explained, allowed or denied.`,
		Example: "  tabbyctl policy explain --from prod/web-0 --to prod/db-0:5432/tcp\n" +
			"  tabbyctl policy explain --from 192.0.2.7 --to prod/web-0:443 -o yaml",
		Args: noArgs,
	}
	cmd.Flags().StringVar(&from, "from", "", "source: namespace/endpoint or an IPv4 address")
	cmd.Flags().StringVar(&to, "to", "", "destination: namespace/endpoint:port/protocol (an endpoint of this node)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		f, err := parseNodeFormat(output)
		if err != nil {
			return err
		}
		if from == "" || to == "" {
			return usageErrorf("%s needs --from and --to", cmd.CommandPath())
		}
		ns := g.defaultNamespace(true)
		ep, port, proto, err := parseExplainTo(to, ns)
		if err != nil {
			return err
		}
		if _, err := netip.ParseAddr(from); err != nil {
			from = qualify(from, ns)
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), nodeRequestTimeout)
		defer cancel()
		ex, err := localapi.NewClient(*socket, nodeRequestTimeout).ExplainPolicy(ctx,
			localapi.ExplainRequest{From: from, To: ep, Protocol: proto, Port: port})
		if err != nil {
			return err
		}
		if f != formatTable {
			return writeDoc(g.stdout, f, ex)
		}
		return printExplanation(g.stdout, ex)
	})
	return cmd
}

// ruleText is "NetworkPolicy ns/name ingress rule 0 (Deny)".
func ruleText(r *localapi.PolicyRule) string {
	n := r.Name
	if r.Namespace != "" {
		n = r.Namespace + "/" + n
	}
	return fmt.Sprintf("%s %s %s rule %d (%s)", r.Kind, n, r.Direction, r.Index, r.Action)
}

// verdictLine is the first line of explain: ALLOWED, or DENIED by what.
func verdictLine(ex *localapi.Explanation) string {
	if ex.Allowed {
		return "ALLOWED"
	}
	st := &ex.Ingress
	if ex.Egress != nil && !ex.Egress.Allowed {
		st = ex.Egress // the source's program drops it first
	}
	switch {
	case st.Stage == "policy" && st.Rule != nil:
		return "DENIED by " + ruleText(st.Rule)
	case st.Stage == "default" && len(st.SelectedBy) > 0:
		return fmt.Sprintf("DENIED by %s %s (default deny: endpoint selected, no rule matched)",
			strings.Join(st.SelectedBy, ", "), st.Direction)
	}
	return fmt.Sprintf("DENIED at %s %s (%s)", st.Endpoint, st.Direction, st.Reason)
}

func stepText(st *localapi.ExplainStep) string {
	v := "denied"
	if st.Allowed {
		v = "allowed"
	}
	at := st.Endpoint
	if st.Interface != "" {
		at += " (" + st.Interface + ")"
	}
	s := fmt.Sprintf("%s at %s, stage %s: ", v, at, st.Stage)
	if st.Rule != nil {
		return s + ruleText(st.Rule)
	}
	if len(st.SelectedBy) > 0 {
		return s + st.Reason + " (selected by " + strings.Join(st.SelectedBy, ", ") + ")"
	}
	return s + st.Reason
}

// printExplanation prints the human form of policy explain.
func printExplanation(w io.Writer, ex *localapi.Explanation) error {
	fmt.Fprintln(w, verdictLine(ex))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, v) }
	src := ex.FromIP
	if ex.From != "" {
		src = ex.From + " (" + ex.FromIP + ")"
	}
	line("From", src)
	dst := fmt.Sprintf("%s (%s) %s", ex.To, ex.ToIP, ex.Protocol)
	if ex.Protocol != "ICMP" {
		dst += "/" + strconv.Itoa(int(ex.Port))
	}
	line("To", dst)
	if ex.Egress != nil {
		line("Egress", stepText(ex.Egress))
	} else {
		line("Egress", "not evaluated on this node")
	}
	line("Ingress", stepText(&ex.Ingress))
	for _, n := range ex.Notes {
		line("Note", n)
	}
	return tw.Flush()
}

func newPolicyDropsCmd(g *globals, socket *string) *cobra.Command {
	var output string
	var count int
	cmd := &cobra.Command{
		Use:   "drops",
		Short: "Stream the packets the datapath drops, with the deciding rule",
		Long: `Stream the packets the policy programs on this node drop, as they happen: the local
endpoint, the direction, the peer, the protocol and port, why (policy, default-deny,
spoof, no-endpoint) and the deciding policy rule. It runs until interrupted (or until
--count events). -o json prints one JSON object a line.`,
		Example: "  tabbyctl policy drops\n  tabbyctl policy drops -o json --count 10",
		Args:    noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table (one line an event) or json (one object a line)")
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many events (0: until interrupted)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		f := format(strings.ToLower(output))
		if f != formatTable && f != formatJSON {
			return usageErrorf("unknown output format %q: use table or json", output)
		}
		if count < 0 {
			return usageErrorf("--count %d: want 0 or more", count)
		}
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		n := 0
		errDone := errors.New("done")
		if f == formatTable {
			fmt.Fprintf(g.stdout, "%-8s  %-30s  %-7s  %-22s  %-9s  %-12s  %s\n", "TIME", "ENDPOINT", "DIR", "PEER",
				"PORT", "REASON", "RULE")
		}
		err := localapi.NewClient(*socket, nodeRequestTimeout).PolicyDrops(ctx, func(ev localapi.DropEvent) error {
			if f == formatJSON {
				b, err := json.Marshal(ev)
				if err != nil {
					return fmt.Errorf("encode drop event: %w", err)
				}
				if _, err := fmt.Fprintf(g.stdout, "%s\n", b); err != nil {
					return err
				}
			} else if err := printDrop(g.stdout, ev); err != nil {
				return err
			}
			n++
			if count > 0 && n >= count {
				return errDone
			}
			return nil
		})
		if errors.Is(err, errDone) {
			return nil
		}
		return err
	})
	return cmd
}

// printDrop prints one drop event as a line.
func printDrop(w io.Writer, ev localapi.DropEvent) error {
	peer := ev.Peer
	if ev.PeerEndpoint != "" {
		peer = ev.PeerEndpoint + " (" + ev.Peer + ")"
	}
	port := ev.Protocol
	if ev.DstPort != 0 {
		port += "/" + strconv.Itoa(int(ev.DstPort))
	}
	rule := "-"
	if ev.Rule != nil {
		rule = ruleText(ev.Rule)
	}
	_, err := fmt.Fprintf(w, "%-8s  %-30s  %-7s  %-22s  %-9s  %-12s  %s\n", ev.Time.Local().Format(time.TimeOnly),
		dash(ev.Endpoint), ev.Direction, peer, port, ev.Reason, rule)
	return err
}
