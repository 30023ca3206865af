package ctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"k8s.io/apimachinery/pkg/util/duration"
)

// nodeBGPLines adds the BGP lines of tabbyctl node status.
func nodeBGPLines(line func(k, v string), b *localapi.BGPStatus) {
	switch {
	case b == nil:
		line("BGP", "unknown (the agent does not report BGP)")
		return
	case !b.Enabled:
		line("BGP", "disabled (--bgp=false)")
		return
	}
	est := 0
	for _, p := range b.Peers {
		if p.State == "Established" {
			est++
		}
	}
	line("BGP", fmt.Sprintf("%s (%d established)", plural(len(b.Peers), "peer", "peers"), est))
	for _, p := range b.Problems {
		line("BGP issue", p)
	}
}

// printNodeBGPPeers prints the local agent's BGP sessions, if any.
func printNodeBGPPeers(w io.Writer, b *localapi.BGPStatus, now time.Time) error {
	if b == nil || len(b.Peers) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "PEER\tTYPE\tASN\tSTATE\tSINCE\tRECEIVED\tADVERTISED\tMESSAGE")
	for _, p := range b.Peers {
		state := p.State
		if p.AdminDown {
			state += " (admin down)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Address, dash(p.Type), p.ASN, state,
			since(p.Since, now), p.PrefixesReceived, p.PrefixesAdvertised, dash(p.LastError))
	}
	return tw.Flush()
}

func since(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(max(now.Sub(*t), 0))
}

// newBGPCmd is "tabbyctl bgp": BGP as the nodes report it in the datastore.
func newBGPCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bgp",
		Short: "Show the BGP sessions of every node",
		Long: `Show BGP as the nodes report it: every tabby-node writes its sessions to its NodeStatus
resource in the datastore.`,
		Example: "  tabbyctl bgp peers\n  tabbyctl bgp peers -o json",
	}
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	cmd.AddCommand(newBGPPeersCmd(g))
	return cmd
}

// BGPPeerRow is one session of one node, as tabbyctl bgp peers -o json|yaml prints it.
type BGPPeerRow struct {
	Node string `json:"node"`
	v1.BGPPeerStatus
}

// BGPPeerList is the document of tabbyctl bgp peers -o json|yaml.
type BGPPeerList struct {
	Peers []BGPPeerRow `json:"peers"`
}

func newBGPPeersCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List every node's BGP sessions from the NodeStatus resources",
		Long: `List the BGP sessions of every node, read from the NodeStatus resources the tabby-node
agents write (so they are as fresh as the last report): the node, the peer address,
the peer type (mesh, global, node or reflector), the session state and since when, the
prefixes received and advertised, and why the session is down.`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		f, err := parseNodeFormat(output)
		if err != nil {
			return err
		}
		store, err := g.getStore()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), nodeRequestTimeout)
		defer cancel()
		sts, err := datastore.List[*v1.NodeStatus](ctx, store, datastore.ListOptions{})
		if err != nil {
			return fmt.Errorf("list NodeStatuses: %w", err)
		}
		rows := bgpPeerRows(sts)
		if f != formatTable {
			return writeDoc(g.stdout, f, BGPPeerList{Peers: rows})
		}
		return printBGPPeers(g.stdout, rows, g.opts.Now())
	})
	return cmd
}

// bgpPeerRows flattens the NodeStatuses' sessions, sorted by node and peer.
func bgpPeerRows(sts []*v1.NodeStatus) []BGPPeerRow {
	rows := []BGPPeerRow{}
	for _, st := range sts {
		node := st.Spec.Node
		if node == "" {
			node = st.Name
		}
		for _, p := range st.Status.BGP.Peers {
			rows = append(rows, BGPPeerRow{Node: node, BGPPeerStatus: p})
		}
	}
	slices.SortFunc(rows, func(a, b BGPPeerRow) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.PeerIP, b.PeerIP), strings.Compare(a.Type, b.Type))
	})
	return rows
}

func printBGPPeers(w io.Writer, rows []BGPPeerRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER\tTYPE\tSTATE\tSINCE\tRECEIVED\tADVERTISED\tMESSAGE")
	for _, r := range rows {
		var t *time.Time
		if r.Since != nil {
			t = &r.Since.Time
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Node, r.PeerIP, dash(r.Type), dash(r.State), since(t, now),
			r.PrefixesReceived, r.PrefixesAdvertised, dash(r.Message))
	}
	return tw.Flush()
}
