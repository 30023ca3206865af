// Package ctl implements tabbyctl, Tabby's calicoctl-like command line: the cobra
// command tree, kubeconfig loading, reading and checking resource files, and printing.
//
// The package owns, one file per command group:
//
//   - root.go: Execute and Run (the entry points, returning the exit code), the global
//     flags (--kubeconfig, --context, -n), exit codes and error printing, and the
//     injectable Store factory (Options.NewStore, Options.Store);
//   - input.go: reading -f FILE|DIR|- and checking every object before anything is
//     written (decode, default, validate, pool overlap, namespace);
//   - write.go: create, apply and replace;
//   - delete.go: delete -f and delete KIND NAME...;
//   - get.go and print.go: get, and the yaml, json, table and wide printers;
//   - tables.go: the table and wide columns of every kind;
//   - label.go: label;
//   - validate.go: validate (offline);
//   - version.go: version, and the Version variable set by the linker;
//   - ipam.go and ipam_release.go: ipam show, ipam check and ipam release;
//   - node.go: node status and node routes, over the local agent's socket;
//   - bgp.go: bgp peers, from the NodeStatus resources;
//   - lab.go: lab up, status, exec and down (and the hidden lab run, the lab's
//     supervisor), over package lab.
//
// Exit codes: 0 success; 1 failure (an invalid resource, not found, a conflict, an
// unreachable server); 2 bad usage (unknown command or flag, missing arguments, unknown
// kind). Errors go to stderr as "error: <message>".
//
// Everything the commands read and write goes through a datastore.Store; the package
// holds no client of its own except discovery for "version". The lab commands read no
// kubeconfig: package lab makes and holds its own cluster.
package ctl
