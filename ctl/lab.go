package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/lab"
)

// newLabCmd is "tabbyctl lab": a whole Tabby cluster on this machine (see lab/).
func newLabCmd(g *globals) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a whole Tabby cluster on this machine: up, status, exec, policy, down",
		Long: `The lab is a whole Tabby cluster on one Linux machine, for real: etcd and kube-apiserver
on 127.0.0.1, nodes in network namespaces on a shared fabric, a tabby-node in each,
a top-of-rack router (FRR, BIRD or gobgpd) peering eBGP with every node, and pods wired
by tabby-cni as a kubelet would, and where libvirt runs a VM guest on node a that is a
workload endpoint like the pods. It needs root. Everything it makes lives in its own
network namespaces and its state directory; the host's routes are never touched.

lab up starts a supervisor process that builds the lab and holds it, follows its
progress, then prints the nodes, the BGP sessions from both ends, the pods, the
policies in force and a connectivity matrix (every pod and the VM connect to each
other's TCP port 8080). lab policy deny|allow is the policy demo. lab down removes all of it.`,
		Example: `  tabbyctl lab up
  tabbyctl lab up --nodes 2 --pods-per-node 1 --tor bird
  tabbyctl lab status
  tabbyctl lab exec pod-a1 -- ping -c 3 10.91.0.65
  tabbyctl lab exec a -- ip route
  tabbyctl lab policy deny
  tabbyctl lab policy allow
  tabbyctl lab down`,
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", lab.StateDirFromEnv(), "the lab's state directory (env "+lab.StateDirEnv+")")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	})
	cmd.AddCommand(newLabUpCmd(g, &stateDir, false), newLabUpCmd(g, &stateDir, true), newLabStatusCmd(g, &stateDir),
		newLabExecCmd(g, &stateDir), newLabPolicyCmd(g, &stateDir), newLabDownCmd(g, &stateDir))
	return cmd
}

// labFlags binds the options of lab up (and the supervisor's lab run).
func labFlags(cmd *cobra.Command, o *lab.Options) {
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", lab.DefaultName, "prefix of every namespace and node name the lab makes")
	f.IntVar(&o.Nodes, "nodes", lab.DefaultNodes, "number of nodes")
	f.IntVar(&o.PodsPerNode, "pods-per-node", lab.DefaultPodsPerNode, "pods on each node")
	f.StringVar(&o.Tor, "tor", lab.DefaultTor, "top-of-rack router: frr, bird, gobgpd or none")
	f.BoolVar(&o.RouteReflector, "route-reflector", false, "turn the node-to-node mesh off and make node a the route reflector")
	f.BoolVar(&o.VM, "vm", true, "start a libvirt guest vm-a1 on node a, in the matrix like a pod (--vm=false: pods only; without libvirt or QEMU the lab says why and runs without it)")
	f.StringVar(&o.BinDir, "bin-dir", "", "directory holding tabby-node and tabby-cni (default: next to tabbyctl)")
	f.DurationVar(&o.Timeout, "timeout", lab.DefaultTimeout, "give up the bring-up after this long")
}

// newLabUpCmd is lab up, or with supervisor the hidden lab run that lab up starts.
func newLabUpCmd(g *globals, stateDir *string, supervisor bool) *cobra.Command {
	var o lab.Options
	var output string
	var progressFD int
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Make a lab (or report the one that runs) and print its state and connectivity matrix",
		Long: `Make a lab: etcd and kube-apiserver on 127.0.0.1 with Tabby's CRDs, an IPPool
(10.91.0.0/16) and a BGPConfiguration; nodes in network namespaces on a fabric bridge
(10.90.0.0/24), each running tabby-node; a top-of-rack router peering eBGP with every
node (AS 65000; the nodes are AS 64512 in an iBGP mesh, or around a route reflector);
pods (Pod objects, network namespaces wired by tabby-cni through cnitool), spread
over the nodes; and (--vm, on by default) a libvirt guest vm-a1 on node a, whose tap
node a's tabby-node makes a workload endpoint (DHCP, route, policy). Without libvirt
or QEMU the lab says why and runs pods only. Progress lines show each step; then the
summary: nodes, BGP sessions as the nodes and the router see them, pods, the VM, and
a connectivity matrix.

If a lab already runs in the state directory, it is reported and nothing is made. The
exit code is 0 when every node is ready, every BGP session Established and every pod
reaches every other; 1 otherwise (the lab stays up to be looked at).`,
		Args: noArgs,
	}
	if supervisor {
		cmd.Use, cmd.Short, cmd.Long, cmd.Hidden = "run", "Run the lab's supervisor (lab up starts it)", "", true
		cmd.Flags().IntVar(&progressFD, "progress-fd", -1, "file descriptor to write progress lines to and close once the lab is ready")
	} else {
		cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table (a summary for people) or json (progress goes to stderr)")
	}
	labFlags(cmd, &o)
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		o.StateDir = *stateDir
		if supervisor {
			var progress *os.File
			if progressFD >= 0 {
				// Not for the lab's own children: they would hold lab up's pipe open.
				syscall.CloseOnExec(progressFD)
				progress = os.NewFile(uintptr(progressFD), "progress")
			}
			return lab.Supervise(o, progress, g.stdout)
		}
		if output != "table" && output != "json" {
			return usageErrorf("unknown output format %q: use table or json", output)
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("locate tabbyctl: %w", err)
		}
		progress := g.stdout
		if output == "json" {
			progress = g.stderr
		}
		r, err := lab.Up(cmd.Context(), o, exe, progress)
		if err != nil {
			return err
		}
		return printLabReport(g, r, output)
	})
	return cmd
}

// printLabReport prints r as output says; a report with problems fails the command
// after printing.
func printLabReport(g *globals, r *lab.Report, output string) error {
	if output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else if err := lab.WriteReport(g.stdout, r, lab.Hints{Tabbyctl: invokedAs()}); err != nil {
		return err
	}
	if !r.Healthy() {
		return fmt.Errorf("the lab has %d problems (listed above)", len(r.Problems))
	}
	return nil
}

// invokedAs is how the person ran tabbyctl ("bin/tabbyctl", "tabbyctl").
func invokedAs() string {
	if len(os.Args) > 0 && strings.Contains(os.Args[0], "/") && !strings.HasSuffix(os.Args[0], ".test") {
		return os.Args[0]
	}
	return "tabbyctl"
}

func newLabStatusCmd(g *globals, stateDir *string) *cobra.Command {
	var output string
	var noMatrix bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the running lab's state: nodes, BGP sessions, ToR, pods, connectivity matrix",
		Long: `Ask the running lab, live: every node's tabby-node (readiness, endpoints, routes, BGP
sessions), the top-of-rack router's own view of its sessions, the pods, and a fresh
connectivity matrix. Exit code 0 when all is well, 1 when something is not (or no lab
runs).`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&noMatrix, "no-matrix", false, "skip the connectivity matrix (no pings)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" {
			return usageErrorf("unknown output format %q: use table or json", output)
		}
		r, err := lab.Status(cmd.Context(), *stateDir, !noMatrix)
		if err != nil {
			return err
		}
		return printLabReport(g, r, output)
	})
	return cmd
}

func newLabPolicyCmd(g *globals, stateDir *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "policy deny|allow",
		Short: "The policy demo: deny every connection to pod-a1, or allow it again, and print the matrix",
		Long: `The policy demo. "deny" applies a Kubernetes NetworkPolicy to the lab's kube-apiserver
that isolates pod-a1 for ingress with no rule (demo/deny-ingress-pod-a1; the YAML is
printed by "lab policy show" and can be applied by hand with kubectl), waits until
every node's tabby-node reports its policy maps written from that version of it, and
prints the connectivity matrix: the column of pod-a1 shows DENY. "allow" deletes the
policy, waits until every agent dropped it, and prints the matrix restored. "show"
prints the policy's YAML. Exit code 1 when the matrix has a cell that fails and no
policy explains.`,
		Example: `  tabbyctl lab policy deny
  tabbyctl lab policy allow
  tabbyctl lab policy show | kubectl --kubeconfig /run/tabby-lab/kubeconfig apply -f -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != lab.PolicyDeny && args[0] != lab.PolicyAllow && args[0] != "show") {
				return usageErrorf("%s wants one of deny, allow or show", cmd.CommandPath())
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if output != "table" && output != "json" {
			return usageErrorf("unknown output format %q: use table or json", output)
		}
		if args[0] == "show" {
			_, err := g.stdout.Write(lab.DenyPolicyYAML)
			return err
		}
		res, err := lab.Policy(cmd.Context(), *stateDir, args[0])
		if err != nil {
			return err
		}
		if output == "json" {
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
		} else if err := lab.WritePolicyResult(g.stdout, res, lab.Hints{Tabbyctl: invokedAs()}); err != nil {
			return err
		}
		if res.Report != nil && !res.Report.Healthy() {
			return fmt.Errorf("the lab has %d problems (listed above)", len(res.Report.Problems))
		}
		return nil
	})
	return cmd
}

func newLabExecCmd(g *globals, stateDir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec TARGET [--] [COMMAND [ARG...]]",
		Short: "Run a command in a pod's, node's or the ToR's network namespace",
		Long: `Run COMMAND (default: sh) inside the network namespace of TARGET, with this terminal's
input and output, and exit with its exit code. TARGET is a pod (pod-a1 or demo/pod-a1),
a node (its name, its letter "a", or "node-a"), "tor" or "fabric".`,
		Example: `  tabbyctl lab exec pod-a1 -- ping -c 3 10.91.0.65
  tabbyctl lab exec a -- ip route
  tabbyctl lab exec tor -- ip route
  tabbyctl lab exec pod-b1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s needs a TARGET (a pod, a node, tor or fabric)", cmd.CommandPath())
			}
			return nil
		},
	}
	// Everything after TARGET is the command's, flags included.
	cmd.Flags().SetInterspersed(false)
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		argv := args[1:]
		if len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		code, err := lab.Exec(cmd.Context(), *stateDir, args[0], argv, g.opts.Stdin, g.stdout, g.stderr)
		if err != nil {
			return err
		}
		if code != 0 {
			return &exitError{code: code}
		}
		return nil
	})
	return cmd
}

func newLabDownCmd(g *globals, stateDir *string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: every process, namespace, file and pin it made (safe to run twice)",
		Long: `Stop the lab's supervisor, which tears the lab down, then sweep whatever is left, also
after a crash or a SIGKILL: processes started for the lab, its network namespaces
(<name>-*), cnitool's cached results of its networks, FRR crash-log directories of its
router, BPF pins named <name>*, and the state directory. With no lab, it says so and
exits 0.`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "the lab's name, used when the state directory is gone")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		dir := *stateDir
		_, statErr := os.Stat(dir)
		did := false
		logf := func(format string, args ...any) {
			did = true
			fmt.Fprintf(g.stdout, format+"\n", args...)
		}
		if err := lab.Down(cmd.Context(), dir, name, logf); err != nil {
			return err
		}
		switch {
		case did:
			fmt.Fprintln(g.stdout, "lab down: done")
		case errors.Is(statErr, os.ErrNotExist):
			fmt.Fprintf(g.stdout, "lab down: no lab in %s, nothing to do\n", dir)
		}
		return nil
	})
	return cmd
}
