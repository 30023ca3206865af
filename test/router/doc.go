// Package router is test and benchmark scaffolding that runs a BGP router we did not
// write — FRR (zebra and bgpd), BIRD 2 or gobgpd — inside an existing network
// namespace, typically as the top-of-rack router of Tabby nodes, and reads its state
// back. The interop suites (test/bgp), the benchmarks (bench/) and the lab command use
// it; production code never does. It does not import testing: every call returns an
// error.
//
// The package owns:
//
//   - the router's process lifetime: [Start] renders the config, starts the daemons
//     in the FOREGROUND inside the namespace (`ip netns exec NS ...`) and returns once
//     they answer their CLI; they die with the calling process (Pdeathsig SIGKILL,
//     from a locked OS thread of the router's own, since the signal follows the
//     forking thread); [Router.Stop] (idempotent) stops them, removes the routes they
//     or the router put in the namespace's kernel, FRR's crash-log directories under
//     /var/tmp/frr and the router's directory; [Router.Kill] crashes them (SIGKILL) for
//     graceful restart tests;
//   - its directory: [Config.Dir]/<kind>-<random>/ holds configs, unix sockets (vty,
//     zserv, bird.ctl, gobgpd's API), pid files and logs; [Router.Logs] gives the
//     logs' tails (also after Stop) for failure messages;
//   - reading the router back, normalised across kinds: [Router.Peers] (state,
//     prefixes received, reason when down), [Router.Routes] (learned routes, their
//     next hops, AS path, stale), [Router.RouteCount] (cheap, for 100,000-route
//     polling), [Router.InstalledRoutes] (routes it put in the kernel), and
//     [Router.Exec] for raw CLI output;
//   - changes while running: [Router.AddNeighbor], [Router.RemoveNeighbor],
//     [Router.Announce], [Router.Withdraw].
//
// What each kind does:
//
//	                  FRR 8.4                  BIRD 2.0              gobgpd 3.10
//	started as        zebra, then bgpd         bird -f               gobgpd (API on a unix socket)
//	CLI               vtysh --vty_socket DIR   birdc -s DIR/bird.ctl gobgp --target unix://...
//	Originate         kernel blackholes (proto static protocol of    gobgp global rib add,
//	                  75, metric 7575) +       blackhole routes      one call per prefix
//	                  redistribute kernel with
//	                  a route map: 100,000 ok
//	InstallKernel     zebra (proto bgp, 186,   kernel protocol       unsupported: Start fails
//	                  nexthop objects)         (proto bird, 12)
//	MD5, MaxPrefixes, yes                      yes                   yes
//	Passive
//	GracefulRestart   bgp graceful-restart;    graceful restart on   graceful-restart and
//	                  off: graceful-restart-   (off: off, no helper) mp-graceful-restart
//	                  disable (no helper)
//	Route.Stale       from bgpd ("stale")      inferred: BIRD keeps  from gobgp ("stale")
//	                                           a down session's
//	                                           routes only for GR
//	Multipath         maximum-paths 16 +       kernel merge paths    use-multiple-paths
//	                  multipath-relax
//	FastUpdates       coalesce-time 50 ms      (sends at once)       (sends at once)
//	changes           vtysh configure; netlink rewrite, birdc        rewrite, SIGHUP (neighbors);
//	                  (prefixes)               configure             CLI (prefixes)
//
// Conventions and gotchas, found the hard way:
//
//   - Everything runs as root. FRR runs with -u root -g frrvty: no chown of the
//     directory, and the daemons keep their parent-death signal, which dropping to
//     user frr would clear. Unix socket paths must stay under 108 bytes, so keep Dir
//     short (t.TempDir() of a long test name may not do).
//   - One router per namespace (port 179). The namespace, its addresses and
//     forwarding (ip_forward is 0 in a new namespace) are the caller's.
//   - Timers are data-centre ones: hold time 9 s, keepalive 3 s, connect retry 5 s
//     ([Config.HoldTime], [Config.ConnectRetry]); gobgpd's idle hold after a reset is
//     the connect retry, not 30 s. FRR uses `frr defaults datacenter`,
//     `no bgp ebgp-requires-policy` (else eBGP sends and accepts nothing).
//   - FRR's `network` statements load at ~2,000 a second and staticd is worse: hence
//     the kernel blackholes for Originate (100,000 advertised in ~1.5 s here). The
//     route map matches their metric, so the namespace's other kernel routes are not
//     advertised. Do not originate a prefix equal to a connected subnet.
//   - Every kind advertises its best routes, learned ones included, to every peer. On
//     a shared subnet FRR passes the originator's next hop on over eBGP (third party
//     next hop): node B learns node A's routes via A, not via the ToR. Nodes of one AS
//     behind one ToR drop each other's routes as AS-path loops unless they allow their
//     own AS once.
//   - FRR checks maximum-prefix before counting a prefix, so it tears the session
//     down only when a prefix beyond limit+1 arrives.
//   - BIRD on iBGP gets `direct;` (a neighbor on the shared subnet), else its routes
//     show as unreachable.
//   - After a SIGKILL gobgpd leaves its API socket behind and refuses to start on it,
//     and the gobgp CLI hangs on a dead socket: every CLI call has a deadline.
//
// The tests (run as root; they skip without root or a kind's programs, and fail instead
// under CI=true) use namespaces named tabbyr-<pid>-<random>-*, the addresses
// 10.75.0.0/24, and, as routes inside their own namespaces only, 198.18.0.0/15.
package router
