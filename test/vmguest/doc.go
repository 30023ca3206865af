// Package vmguest is test and lab scaffolding for real libvirt guests on a Tabby node:
// the VM end-to-end suites and the lab boot a tiny guest with it and drive it from its
// serial console. It is never used by production code (vmendpoint is Tabby's side of a
// guest: the tap as a workload endpoint, and DHCP on it).
//
// The package owns:
//
//   - artifacts: Debian's cloud kernel (the current dependency of
//     linux-image-cloud-amd64) and busybox-static, fetched with apt-get download and
//     unpacked with dpkg-deb -x, never installed on the host; and a gzip'd newc
//     initramfs it builds (busybox, the virtio/button/evdev modules in load order, the
//     scripts in guest/), cached under CacheDir and keyed by the kernel package and the
//     initramfs' contents, so a second run costs milliseconds; see [Build];
//   - the guest's /init (guest/init.sh): modules, eth0, DHCP with udhcpc (guest/udhcpc.sh
//     applies a /32 and the option 121 routes: 169.254.1.1 on-link, the default via it),
//     an HTTP server on TCP 80 and a bare one on 8080 both answering the guest's name,
//     acpid for the power button, and a shell on the serial console; it prints
//     "TABBY-VMGUEST: ..." lines ([LineDHCPOK], [LineDHCPFailed], [LineReady], ...);
//   - the console client: connects to the unix socket QEMU serves the serial port on,
//     keeps the transcript, waits for lines with deadlines, and runs commands wrapped in
//     unique markers, returning output and exit status; see [Console];
//   - libvirtd: [StartLibvirtd] makes sure virtlogd and the machine's one system
//     libvirtd run and answer, and Stop stops only what it started (and leaves a
//     libvirtd that still has other suites' domains running);
//   - domains: [Define] and [Domain] (type qemu, i.e. TCG; 128 MiB; direct kernel boot;
//     one virtio NIC type ethernet on a tap libvirt creates, with the caller's MAC; the
//     serial console as a unix socket logged to a file; the caller's <metadata> passed
//     through), start paused then resume, ACPI reboot and shutdown, destroy, and Close
//     (destroy, undefine, remove the files); the test helpers [Require], [BuildT],
//     [LibvirtdT] and [DefineT] clean up when the test ends, also on failure.
//
// Which libvirtd: there is one system libvirtd per machine, and its taps appear in its
// network namespace. Suites use the shared one in the host's namespace
// (StartLibvirtd(ctx, "")), give their domains unique names, and hand each tap to their
// node namespace in Domain.Start's hook (`ip link set TAP netns NODE`), while the guest
// is still paused. Starting libvirtd inside a node namespace (StartLibvirtd(ctx, node))
// puts every tap there at once, but only a run that owns the machine's libvirtd may do
// it (the lab, or TestLibvirtdInNetns under TABBY_VMGUEST_LIBVIRTD_NETNS=1); when
// libvirtd already runs elsewhere StartLibvirtd returns [ErrOtherNetns] naming where.
// A test that stops, kills or restarts libvirtd must never do it to the shared daemon:
// it starts a [PrivateLibvirtd] ([StartPrivateLibvirtd], [PrivateLibvirtdT]). As root
// libvirtd has no session mode (XDG_* variables do not move a root daemon's state), so
// each start runs `unshare -m --propagation private` and bind-mounts the test's
// directories over /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /etc/libvirt and
// /var/log/libvirt in that mount namespace only, then `libvirtd -d -p DIR/libvirtd.pid`;
// its libvirtd.conf puts the sockets in DIR/sock, so clients (and tabby-node's
// --libvirt-uri) use qemu:///system?socket=DIR/sock/libvirt-sock. Its qemu.conf adds
// stdio_handler="file" (no virtlogd) and cgroup_controllers=[]. The same directories
// at every start let a restarted daemon reconnect to its running guests; its domains'
// taps appear in the host's namespace as with the shared daemon. After a restart the
// old connection is dead: connect again and [Domain.Rebind] the domains to it.
// StartLibvirtd also gives /dev/kvm Debian's group and mode (root:kvm 0660) where no udev
// did: otherwise libvirtd re-probes QEMU on every define and start (seconds to tens of
// seconds each). Guests are TCG whatever /dev/kvm says.
//
// Files QEMU reads run as uid 64055: each guest gets copies of the artifacts in its own
// 0755 directory (a t.TempDir or a home cache is not reachable). Addresses are the
// caller's; this package's own tests use 10.79.0.0/16 only.
package vmguest
