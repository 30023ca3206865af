package ctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// newVMCmd is "tabbyctl vm": libvirt guests as Tabby sees them.
func newVMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Show libvirt guests (VMs) and their workload endpoints",
		Long: `Show the libvirt guests Tabby networks: every tap of a running guest that tabby-node's
libvirt watcher follows is a WorkloadEndpoint of orchestrator libvirt (see docs/vm.md).`,
		Example: "  tabbyctl vm list -A\n  tabbyctl vm list -n prod -o wide\n  tabbyctl vm list -A --socket /var/run/tabby/tabby-node.sock",
	}
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	cmd.AddCommand(newVMListCmd(g))
	return cmd
}

// vmRow is one guest NIC: a row of tabbyctl vm list, and an item of its yaml and json.
type vmRow struct {
	Namespace string `json:"namespace"`
	// Domain is the libvirt domain's name; UUID its UUID.
	Domain string `json:"domain"`
	UUID   string `json:"uuid,omitempty"`
	Node   string `json:"node"`
	Tap    string `json:"tap,omitempty"`
	MAC    string `json:"mac,omitempty"`
	// Addresses are the endpoint's ipNetworks.
	Addresses []string `json:"addresses"`
	// State is running, standby (the endpoint of a live migration's destination
	// until the guest resumes there) or shut off; with --socket, the local agent's
	// view of the domains on its node (else from the endpoint: a guest has endpoints
	// only while it runs).
	State string `json:"state"`
	// Endpoint is the WorkloadEndpoint's name ("" for a domain without one).
	Endpoint string `json:"endpoint,omitempty"`
	// Problems and Error are what the local agent reports for the domain (--socket).
	Problems []string `json:"problems,omitempty"`
	Error    string   `json:"error,omitempty"`
	// Migration is the domain's last live migration to the local agent's node
	// (--socket), with its blackout.
	Migration *localapi.VMMigration `json:"migration,omitempty"`
}

// vmList is the document of tabbyctl vm list -o yaml|json.
type vmList struct {
	Items []vmRow `json:"items"`
}

func newVMListCmd(g *globals) *cobra.Command {
	var output, socket string
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the VMs of the cluster: domain, node, tap, MAC, address, state",
		Long: `List the libvirt guests of the cluster from the datastore: one row per guest NIC, from
its WorkloadEndpoint of orchestrator libvirt (workload = the domain, interfaceName = the
tap, mac, ipNetworks), in the namespace (-n, default the context's) or in all of them
(-A), sorted by namespace, domain and tap.

A guest has endpoints only while it runs, so STATE is "running". With --socket, the
tabby-node on this machine is asked too (GET /vms): the guests of its node show the
watcher's state and any problem or error, and, with -A, its domains without an endpoint
(shut off, or failing) are listed as well.

Output formats (-o): table (default), wide (adds ENDPOINT and UUID), yaml, json.`,
		Args: noArgs,
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, wide, yaml or json")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list the VMs of every namespace")
	f.StringVar(&socket, "socket", "", "also ask the tabby-node on this machine through its unix socket (e.g. "+localapi.DefaultSocket+")")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		format, err := parseFormat(output)
		if err != nil {
			return err
		}
		store, err := g.getStore()
		if err != nil {
			return err
		}
		ns := ""
		if !allNamespaces {
			ns = g.defaultNamespace(false)
		}
		ctx := cmd.Context()
		weps, err := datastore.List[*v1.WorkloadEndpoint](ctx, store, datastore.ListOptions{Namespace: ns})
		if err != nil {
			return err
		}
		var local *localVMs
		if socket != "" {
			if local, err = askVMs(ctx, socket); err != nil {
				return err
			}
		}
		rows := vmRows(weps, local, allNamespaces)
		if format == formatYAML || format == formatJSON {
			return writeDoc(g.stdout, format, vmList{Items: rows})
		}
		if len(rows) == 0 {
			if ns != "" {
				fmt.Fprintf(g.stderr, "No VMs found in %s namespace.\n", ns)
			} else {
				fmt.Fprintln(g.stderr, "No VMs found.")
			}
			return nil
		}
		return printVMs(g.stdout, rows, allNamespaces, format == formatWide)
	})
	return cmd
}

// localVMs is the local agent's answer: its node and its watcher's domains.
type localVMs struct {
	node string
	vms  *localapi.VMStatus
}

func askVMs(ctx context.Context, socket string) (*localVMs, error) {
	ctx, cancel := context.WithTimeout(ctx, nodeRequestTimeout)
	defer cancel()
	c := localapi.NewClient(socket, nodeRequestTimeout)
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.VMs == nil {
		if st.VMs, err = c.VMs(ctx); err != nil {
			return nil, err
		}
	}
	return &localVMs{node: st.Node, vms: st.VMs}, nil
}

// vmRows makes the rows: one per libvirt WorkloadEndpoint, with the state the local
// agent reports for those of its node; with all, the agent's domains without one too.
func vmRows(weps []*v1.WorkloadEndpoint, local *localVMs, all bool) []vmRow {
	byEndpoint := map[string]*localapi.VMDomain{}
	shown := map[string]bool{}
	if local != nil {
		for i := range local.vms.Domains {
			d := &local.vms.Domains[i]
			for _, e := range d.Endpoints {
				byEndpoint[e.Namespace+"/"+e.Name] = d
			}
		}
	}
	rows := []vmRow{}
	for _, w := range weps {
		if w.Spec.Orchestrator != v1.OrchestratorLibvirt {
			continue
		}
		r := vmRow{Namespace: w.Namespace, Domain: w.Spec.Workload, UUID: w.Spec.ContainerID, Node: w.Spec.Node,
			Tap: w.Spec.InterfaceName, MAC: w.Spec.MAC, Addresses: append([]string{}, w.Spec.IPNetworks...),
			State: localapi.VMStateRunning, Endpoint: w.Name}
		if w.Spec.Standby {
			r.State = localapi.VMStateStandby
		}
		if local != nil && w.Spec.Node == local.node {
			if d := byEndpoint[w.Namespace+"/"+w.Name]; d != nil {
				r.State, r.Problems, r.Error, r.Migration = d.State, d.Problems, d.LastError, d.Migration
				shown[d.UUID] = true
			}
		}
		rows = append(rows, r)
	}
	if local != nil && all {
		for _, d := range local.vms.Domains {
			if shown[d.UUID] {
				continue
			}
			rows = append(rows, vmRow{Domain: d.Name, UUID: d.UUID, Node: local.node, Addresses: []string{},
				State: d.State, Problems: d.Problems, Error: d.LastError})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if (a.Namespace == "") != (b.Namespace == "") {
			return b.Namespace == "" // domains without an endpoint last
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.Tap < b.Tap
	})
	return rows
}

// vmState is the STATE column: the state, and why it may not be well.
func vmState(r vmRow) string {
	s := r.State
	switch {
	case r.Error != "":
		s += " (error: " + r.Error + ")"
	case len(r.Problems) > 0:
		s += " (" + strings.Join(r.Problems, "; ") + ")"
	}
	return s
}

// vmMigrated is the MIGRATED column: where from and the blackout of the last live
// migration here ("-" without one or without --socket).
func vmMigrated(m *localapi.VMMigration) string {
	switch {
	case m == nil:
		return "-"
	case m.BlackoutMillis != nil:
		return fmt.Sprintf("from %s, blackout %.0fms", dash(m.From), *m.BlackoutMillis)
	default:
		return fmt.Sprintf("from %s, blackout unknown (%s)", dash(m.From), m.Error)
	}
}

// printVMs prints the table of tabbyctl vm list.
func printVMs(w io.Writer, rows []vmRow, showNamespace, wide bool) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	cols := []string{"DOMAIN", "NODE", "TAP", "MAC", "ADDRESS", "STATE"}
	if showNamespace {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	if wide {
		cols = append(cols, "ENDPOINT", "UUID", "MIGRATED")
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, r := range rows {
		vals := []string{r.Domain, r.Node, dash(r.Tap), dash(r.MAC), dash(strings.Join(r.Addresses, ",")), vmState(r)}
		if showNamespace {
			vals = append([]string{dash(r.Namespace)}, vals...)
		}
		if wide {
			vals = append(vals, dash(r.Endpoint), dash(r.UUID), vmMigrated(r.Migration))
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	return tw.Flush()
}

// nodeVMLine adds the VMs line of tabbyctl node status.
func nodeVMLine(line func(k, v string), vs *localapi.VMStatus) {
	switch {
	case vs == nil:
		line("VMs", "unknown (the agent does not report VM endpoints)")
		return
	case !vs.Enabled:
		line("VMs", "off (--vm-endpoints=false)")
		return
	}
	eps := 0
	for _, d := range vs.Domains {
		eps += len(d.Endpoints)
	}
	counts := plural(len(vs.Domains), "domain", "domains") + ", " + plural(eps, "endpoint", "endpoints")
	if !vs.Connected {
		why := vs.Error
		if why == "" {
			why = "not connected"
		}
		line("VMs", fmt.Sprintf("libvirt %s not connected: %s (%s kept)", vs.URI, why, counts))
		return
	}
	line("VMs", fmt.Sprintf("libvirt %s connected, %s", vs.URI, counts))
}
