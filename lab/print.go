package lab

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Hints say how the person runs tabbyctl, for the "where to look next" lines.
type Hints struct {
	// Tabbyctl is how to run tabbyctl ("bin/tabbyctl").
	Tabbyctl string
}

// Matrix symbols: ASCII, so any terminal and any log shows them.
const (
	symOK   = "ok"
	symFail = "XX"
	symSelf = "."
)

// WriteReport prints r for people: the lab, its nodes, the BGP sessions from both
// ends, the pods, the connectivity matrix, the problems, and where to look next.
func WriteReport(w io.Writer, r *Report, h Hints) error {
	if h.Tabbyctl == "" {
		h.Tabbyctl = "tabbyctl"
	}
	b := &strings.Builder{}
	o := r.Options
	state := "is up"
	if r.Existing {
		state = "is already running (lab up made nothing new)"
	}
	fmt.Fprintf(b, "\nTabby lab %q %s: %d nodes, %d pods, %s, %s\n", r.Name, state, len(r.Nodes), len(r.Pods),
		o.torDescription(), o.bgpMode())
	fmt.Fprintf(b, "  started %s", r.Started.Local().Format(time.DateTime))
	if r.ReadyAfter != "" {
		fmt.Fprintf(b, ", ready after %s", r.ReadyAfter)
	}
	fmt.Fprintf(b, "; supervisor pid %d; state in %s\n", r.PID, r.StateDir)
	fmt.Fprintf(b, "  kube-apiserver %s; pods from IPPool %s (%s); fabric %s\n", r.APIServer, PoolName, PoolNet, FabricNet)

	b.WriteString("\nNODES\n")
	tw := tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFABRIC IP\tREADY\tENDPOINTS\tROUTES (local/blackhole/learned)")
	for _, n := range r.Nodes {
		ready := yesNo(n.Ready)
		switch {
		case n.Error != "":
			ready = "no answer"
		case !n.Ready && len(n.NotReady) > 0:
			ready = "no: " + strings.Join(n.NotReady, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d/%d\n", n.Name, n.IP, ready, n.Endpoints, n.Routes.Local, n.Routes.Blackhole, n.Routes.Learned)
	}
	tw.Flush()

	// Without the advertised counts: the agent refreshes them every 10 s only (the
	// router's PREFIXES below are what the nodes sent it); -o json has them.
	b.WriteString("\nBGP SESSIONS (as each node's tabby-node reports them)\n")
	tw = tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER\tTYPE\tASN\tSTATE\tRECEIVED\tACCEPTED")
	for _, n := range r.Nodes {
		if len(n.Sessions) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t(none)\t\t\n", n.Name)
		}
		for _, s := range n.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\n", n.Name, s.Address, s.Type, s.ASN, s.State,
				s.PrefixesReceived, s.PrefixesAccepted)
		}
	}
	tw.Flush()
	if t := r.Tor; t != nil {
		fmt.Fprintf(b, "\nTOP-OF-RACK ROUTER %s (%s, AS %d, %s), as its own CLI reports its sessions\n", t.Netns, t.Kind, t.AS, t.IP)
		if t.Error != "" {
			fmt.Fprintf(b, "  %s\n", t.Error)
		}
		tw = tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER\tNODE\tAS\tSTATE\tPREFIXES")
		for _, p := range t.Peers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", p.Addr, dash(p.Node), p.AS, p.State, p.Prefixes)
		}
		tw.Flush()
	}

	b.WriteString("\nPODS\n")
	if len(r.Pods) == 0 {
		b.WriteString("  (none: --pods-per-node 0)\n")
	} else {
		tw = tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tNAMESPACE\tNODE\tIP")
		for _, p := range r.Pods {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Namespace, p.Node, p.IP)
		}
		tw.Flush()
	}
	if m := r.Matrix; m != nil && len(m.Workloads) > 1 {
		writeMatrix(b, m)
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nPROBLEMS\n")
		for _, p := range r.Problems {
			fmt.Fprintf(b, "  - %s\n", p)
		}
	}
	writeNext(b, r, h)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeMatrix prints the connectivity matrix, rows pinging columns.
func writeMatrix(b *strings.Builder, m *Matrix) {
	fmt.Fprintf(b, "\nCONNECTIVITY (each row pings each column: %s answered, %s no answer)\n", symOK, symFail)
	tw := tabwriter.NewWriter(b, 2, 4, 2, ' ', 0)
	fmt.Fprint(tw, "FROM \\ TO")
	for _, name := range m.Workloads {
		fmt.Fprintf(tw, "\t%s", name)
	}
	fmt.Fprintln(tw)
	for i, row := range m.Cells {
		fmt.Fprintf(tw, "%s (%s)", m.Workloads[i], m.IPs[i])
		for _, c := range row {
			sym := symFail
			switch c {
			case CellOK:
				sym = symOK
			case CellSelf:
				sym = symSelf
			}
			fmt.Fprintf(tw, "\t%s", sym)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	verdict := "every workload reaches every other"
	if !m.Full() {
		verdict = fmt.Sprintf("%d pairs UNREACHABLE", m.Total-m.Reachable)
	}
	fmt.Fprintf(b, "%d of %d pairs reachable: %s (pinged in %s)\n", m.Reachable, m.Total, verdict, m.Took)
}

// writeNext prints where to look next: commands, each with what it shows.
func writeNext(b *strings.Builder, r *Report, h Hints) {
	ctl := h.Tabbyctl
	lab := ctl + " lab" + stateDirFlag(r.StateDir)
	kc := ctl + " --kubeconfig " + r.Kubeconfig
	type line struct{ cmd, what string }
	lines := []line{
		{kc + " get workloadendpoints -A -o wide", "the pods' workload endpoints"},
		{kc + " ipam show --show-blocks", "the pool's /26 blocks and their nodes"},
		{kc + " bgp peers", "every node's BGP sessions"},
	}
	if r.Kubectl != "" {
		lines = append(lines, line{r.Kubectl + " --kubeconfig " + r.Kubeconfig + " get pods -A -o wide", "the Pod objects"})
	}
	if len(r.Pods) > 1 {
		src, dst := r.Pods[0], r.Pods[len(r.Pods)-1]
		lines = append(lines, line{fmt.Sprintf("%s exec %s -- ping -c 3 %s", lab, src.Name, dst.IP), src.Name + " pings " + dst.Name + " on another node"})
	}
	if len(r.Nodes) > 0 {
		lines = append(lines, line{lab + " exec a -- ip route", "node a's routes: /32s to its pods and its blocks (proto 116), learned over BGP (proto 117)"})
	}
	if t := r.Tor; t != nil && len(t.CLI) > 0 {
		lines = append(lines, line{fmt.Sprintf("%s exec tor -- %s %s", lab, strings.Join(t.CLI, " "), torShow(t.Kind)), "the top-of-rack router's own view of its sessions"})
	}
	lines = append(lines, line{lab + " status", "this summary again, live"}, line{lab + " down", "remove everything the lab made"})
	b.WriteString("\nNEXT (the lab's kubeconfig is " + r.Kubeconfig + ")\n")
	for _, l := range lines {
		fmt.Fprintf(b, "  %s:\n      %s\n", l.what, l.cmd)
	}
	fmt.Fprintf(b, "  logs: %s/%s, %s/%s/<node>/tabby-node.log\n", r.StateDir, logFile, r.StateDir, fabricDir)
}

// torShow is the router CLI's command showing its BGP sessions.
func torShow(kind string) string {
	switch kind {
	case "frr":
		return "-c 'show bgp summary'"
	case "bird":
		return "show protocols"
	case "gobgpd":
		return "neighbor"
	}
	return ""
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
