package lab

import (
	"fmt"
	"io"
	"slices"
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
	symOK     = "ok"
	symDenied = "DENY"
	symFail   = "XX"
	symSelf   = "."
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
	vms := ""
	if r.VM != nil {
		vms = ", 1 VM"
	}
	fmt.Fprintf(b, "\nTabby lab %q %s: %d nodes, %d pods%s, %s, %s\n", r.Name, state, len(r.Nodes), len(r.Pods), vms,
		o.torDescription(), o.bgpMode())
	fmt.Fprintf(b, "  started %s", r.Started.Local().Format(time.DateTime))
	if r.ReadyAfter != "" {
		fmt.Fprintf(b, ", ready after %s", r.ReadyAfter)
	}
	fmt.Fprintf(b, "; supervisor pid %d; state in %s\n", r.PID, r.StateDir)
	fmt.Fprintf(b, "  kube-apiserver %s; pods from IPPool %s (%s); fabric %s\n", r.APIServer, PoolName, PoolNet, FabricNet)

	b.WriteString("\nNODES\n")
	tw := tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFABRIC IP\tREADY\tENDPOINTS\tROUTES (local/blackhole/learned)\tPOLICY")
	for _, n := range r.Nodes {
		ready := yesNo(n.Ready)
		switch {
		case n.Error != "":
			ready = "no answer"
		case !n.Ready && len(n.NotReady) > 0:
			ready = "no: " + strings.Join(n.NotReady, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d/%d\t%s\n", n.Name, n.IP, ready, n.Endpoints, n.Routes.Local, n.Routes.Blackhole,
			n.Routes.Learned, nodePolicy(n))
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
	writeVM(b, r)
	writePolicies(b, r.Policies)
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

// writeVM prints the lab's guest, or why it has none.
func writeVM(b *strings.Builder, r *Report) {
	v := r.VM
	switch {
	case v == nil && r.VMNote != "":
		fmt.Fprintf(b, "\nVMS\n  (none: %s)\n", r.VMNote)
		return
	case v == nil:
		return
	}
	b.WriteString("\nVMS (libvirt domains; the address is their WorkloadEndpoint's, handed out by DHCP)\n")
	tw := tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDOMAIN\tNAMESPACE\tNODE\tTAP\tMAC\tIP\tSTATE")
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Domain, v.Namespace, v.Node, v.Tap, v.MAC, dash(v.IP), v.State)
	tw.Flush()
}

// nodePolicy is the NODES table's POLICY cell.
func nodePolicy(n NodeReport) string {
	p := n.Policy
	switch {
	case n.Error != "":
		return "-"
	case p == nil || !p.Enabled:
		return "off"
	case !p.Programmed:
		return "not programmed"
	}
	return fmt.Sprintf("enforced on %d, %d rules", p.Enforced, p.Rules)
}

// writePolicies prints the policies in force.
func writePolicies(b *strings.Builder, ps []PolicyReport) {
	b.WriteString("\nPOLICIES IN FORCE\n")
	if len(ps) == 0 {
		b.WriteString("  (none: every pod takes connections from every other)\n")
		return
	}
	tw := tabwriter.NewWriter(b, 4, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tVERSION\tISOLATES (ingress)\tPROGRAMMED")
	for _, p := range ps {
		iso := "-"
		if len(p.Isolates) > 0 {
			iso = strings.Join(p.Isolates, ",")
			if p.IngressRules == 0 {
				iso += " (no ingress rule: nothing may connect)"
			} else {
				iso += fmt.Sprintf(" (%d ingress rules)", p.IngressRules)
			}
		}
		prog := fmt.Sprintf("by %d of %d nodes", p.Programmed, p.Nodes)
		if p.Gone {
			prog = fmt.Sprintf("deleted; still enforced by %d of %d nodes", p.Programmed, p.Nodes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Kind, nsName(p.Namespace, p.Name), dash(p.ResourceVersion), iso, prog)
	}
	tw.Flush()
}

// writeMatrix prints the connectivity matrix, rows probing columns.
func writeMatrix(b *strings.Builder, m *Matrix) {
	probe := m.Probe
	if probe == "" {
		probe = "a probe"
	}
	fmt.Fprintf(b, "\nCONNECTIVITY (each row connects to each column on %s: %s answered, %s denied by a policy in force, %s no answer)\n",
		probe, symOK, symDenied, symFail)
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
			case CellDenied:
				sym = symDenied
			}
			fmt.Fprintf(tw, "\t%s", sym)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	var verdict []string
	if m.Full() {
		verdict = append(verdict, "every workload reaches every other")
	}
	if m.Denied > 0 {
		verdict = append(verdict, fmt.Sprintf("%d pairs denied by policy", m.Denied))
	}
	if f := m.Failed(); f > 0 {
		verdict = append(verdict, fmt.Sprintf("%d pairs UNREACHABLE", f))
	}
	fmt.Fprintf(b, "%d of %d pairs reachable: %s (probed in %s)\n", m.Reachable, m.Total, strings.Join(verdict, ", "), m.Took)
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
	if len(r.Pods) > 1 {
		src, dst := r.Pods[len(r.Pods)-1], r.Pods[0]
		lines = append(lines, line{fmt.Sprintf("%s exec %s -- curl -s http://%s:%d/", lab, src.Name, dst.IP, ProbePort),
			fmt.Sprintf("%s connects to %s's port %d, as the matrix does", src.Name, dst.Name, ProbePort)})
		if hasPolicy(r.Policies) {
			lines = append(lines, line{lab + " policy allow", "the policy demo: remove its deny policy and show the matrix restored"})
		} else {
			lines = append(lines, line{lab + " policy deny", "the policy demo: deny every connection to pod-a1 and show the matrix change"})
		}
	}
	if v := r.VM; v != nil && v.IP != "" && len(r.Pods) > 0 {
		src := r.Pods[len(r.Pods)-1]
		lines = append(lines, line{fmt.Sprintf("%s exec %s -- curl -s telnet://%s:%d </dev/null", lab, src.Name, v.IP, ProbePort),
			fmt.Sprintf("%s connects to the VM %s, which answers its name", src.Name, v.Name)},
			line{fmt.Sprintf("virsh -c qemu:///system dominfo %s", v.Domain), "the VM as libvirt sees it"})
	}
	lines = append(lines, line{lab + " status", "this summary again, live"}, line{lab + " down", "remove everything the lab made"})
	b.WriteString("\nNEXT (the lab's kubeconfig is " + r.Kubeconfig + ")\n")
	for _, l := range lines {
		fmt.Fprintf(b, "  %s:\n      %s\n", l.what, l.cmd)
	}
	fmt.Fprintf(b, "  logs: %s/%s, %s/%s/<node>/tabby-node.log", r.StateDir, logFile, r.StateDir, fabricDir)
	if r.VM != nil {
		fmt.Fprintf(b, ", %s/%s/console.log (the VM's console)", r.StateDir, vmDir)
	}
	b.WriteString("\n")
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

// hasPolicy reports whether the demo's policy is among ps.
func hasPolicy(ps []PolicyReport) bool {
	np, err := DenyPolicy()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(ps, func(p PolicyReport) bool {
		return p.Kind == policyKind && p.Namespace == np.Namespace && p.Name == np.Name && !p.Gone
	})
}

// WritePolicyResult prints the policy demo's result for people: what was applied or
// removed, how long the agents took to program it, the policies in force, the matrix
// and the problems.
func WritePolicyResult(w io.Writer, res *PolicyResult, h Hints) error {
	if h.Tabbyctl == "" {
		h.Tabbyctl = "tabbyctl"
	}
	b := &strings.Builder{}
	r := res.Report
	name := fmt.Sprintf("NetworkPolicy %s/%s", res.Namespace, res.Name)
	switch {
	case res.Action == PolicyDeny && res.Changed:
		fmt.Fprintf(b, "applied %s (resourceVersion %s) to the lab's kube-apiserver\n", name, res.ResourceVersion)
	case res.Action == PolicyDeny:
		fmt.Fprintf(b, "%s was already applied (resourceVersion %s)\n", name, res.ResourceVersion)
	case res.Changed:
		fmt.Fprintf(b, "deleted %s from the lab's kube-apiserver\n", name)
	default:
		fmt.Fprintf(b, "%s was not there: nothing to remove\n", name)
	}
	what := "written from it"
	if res.Action == PolicyAllow {
		what = "without it"
	}
	fmt.Fprintf(b, "every node's tabby-node reported its policy maps %s after %s\n", what, res.ProgrammedAfter)
	if r != nil {
		writePolicies(b, r.Policies)
		if m := r.Matrix; m != nil && len(m.Workloads) > 1 {
			writeMatrix(b, m)
		}
		if len(r.Problems) > 0 {
			b.WriteString("\nPROBLEMS\n")
			for _, p := range r.Problems {
				fmt.Fprintf(b, "  - %s\n", p)
			}
		}
		lab := h.Tabbyctl + " lab" + stateDirFlag(r.StateDir)
		if res.Action == PolicyDeny {
			fmt.Fprintf(b, "\nNEXT: %s policy allow   (removes it; the matrix is restored)\n", lab)
		} else {
			fmt.Fprintf(b, "\nNEXT: %s policy deny   (applies it again)\n", lab)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
