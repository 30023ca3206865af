package vmguest

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Options describe a guest.
type Options struct {
	// Name is the domain's name, unique on the machine (tests share libvirtd); it is also
	// the name the guest's TCP servers answer with.
	Name string
	// MAC is the guest's MAC (e.g. 52:54:00:4f:00:0a); libvirt gives the tap fe: and the
	// rest of it.
	MAC string
	// Tap is the tap's name (at most 15 bytes); libvirt creates it on start in its own
	// network namespace and deletes it on stop.
	Tap string
	// Metadata is the inner XML of the domain's <metadata>, passed through unchanged
	// (Tabby reads labels from its own XML namespace there). "" leaves it out.
	Metadata string
	// Artifacts are the kernel and initramfs (Build); Start uses copies in Dir.
	Artifacts *Artifacts
	// Dir holds the guest's files: copies of the artifacts, the console socket and its
	// log. "" makes a temporary directory. Close removes it either way.
	Dir string
	// MemoryMiB is the guest's RAM (0 is 128).
	MemoryMiB int
	// KernelArgs are appended to the kernel command line "console=ttyS0 quiet
	// tabby.name=<Name>" ("loglevel=7" brings the boot messages back).
	KernelArgs string
}

// Domain is a defined libvirt guest of this package (type qemu: TCG, direct kernel
// boot, one virtio NIC on a tap, the serial console on a unix socket).
type Domain struct {
	Opts       Options
	Dir        string
	ConsoleLog string   // the console's log file, written by virtlogd
	Console    *Console // connected by Start
	// StartedAt is when the last Start resumed the guest's CPU.
	StartedAt time.Time

	dom        *libvirt.Domain
	sock       string // the console socket now ("" the first one)
	migrations int    // how many times Migrate moved it
	closeOnce  sync.Once
	closeErr   error
}

var domainXML = template.Must(template.New("domain").Funcs(template.FuncMap{"x": xmlEscape}).Parse(`<domain type='qemu'>
  <name>{{x .Name}}</name>
  {{- if .Metadata}}
  <metadata>{{.Metadata}}</metadata>
  {{- end}}
  <memory unit='MiB'>{{.MemoryMiB}}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{{x .Kernel}}</kernel>
    <initrd>{{x .Initrd}}</initrd>
    <cmdline>console=ttyS0 quiet tabby.name={{x .Name}}{{if .KernelArgs}} {{x .KernelArgs}}{{end}}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='ethernet'>
      <mac address='{{x .MAC}}'/>
      <target dev='{{x .Tap}}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='{{x .Socket}}'/>
      <log file='{{x .Log}}' append='off'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
`))

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// Define checks opts, copies the artifacts into the guest's directory and defines the
// domain on conn (not started). On failure what was made is removed.
func Define(conn *libvirt.Connect, opts Options) (*Domain, error) {
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 128
	}
	if _, err := net.ParseMAC(opts.MAC); err != nil {
		return nil, fmt.Errorf("vmguest: guest MAC: %w", err)
	}
	switch {
	case !regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`).MatchString(opts.Name):
		return nil, fmt.Errorf("vmguest: domain name %q: want 1-64 of [A-Za-z0-9_.-]", opts.Name)
	case opts.Tap == "" || len(opts.Tap) > 15:
		return nil, fmt.Errorf("vmguest: tap name %q: want 1-15 bytes", opts.Tap)
	case opts.Artifacts == nil:
		return nil, errors.New("vmguest: no Artifacts")
	}
	d := &Domain{Opts: opts, Dir: opts.Dir}
	if d.Dir == "" {
		dir, err := os.MkdirTemp("", "tabby-vmguest-"+opts.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("vmguest: guest dir: %w", err)
		}
		d.Dir = dir
	}
	a, err := opts.Artifacts.CopyForQEMU(d.Dir)
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(d.Dir))
	}
	d.ConsoleLog = filepath.Join(d.Dir, "console.log")
	var x bytes.Buffer
	if err := domainXML.Execute(&x, map[string]any{
		"Name": opts.Name, "Metadata": opts.Metadata, "MemoryMiB": opts.MemoryMiB,
		"Kernel": a.Kernel, "Initrd": a.Initrd, "MAC": opts.MAC, "Tap": opts.Tap,
		"Socket": d.socket(), "Log": d.ConsoleLog, "KernelArgs": opts.KernelArgs,
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("vmguest: domain xml: %w", err), os.RemoveAll(d.Dir))
	}
	d.dom, err = conn.DomainDefineXMLFlags(x.String(), libvirt.DOMAIN_DEFINE_VALIDATE)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("vmguest: define %s: %w", opts.Name, err), os.RemoveAll(d.Dir))
	}
	return d, nil
}

func (d *Domain) socket() string { return filepath.Join(d.Dir, "console.sock") }

// socketPath is the console socket of the running guest (moved by Migrate).
func (d *Domain) socketPath() string {
	if d.sock != "" {
		return d.sock
	}
	return d.socket()
}

// Start starts the guest paused, connects its console, runs hook (if not nil: the tap
// exists by then, e.g. to move it or serve DHCP on it) and resumes it. After a
// shutdown it starts it again and reconnects the console (keeping the transcript).
func (d *Domain) Start(ctx context.Context, hook func() error) error {
	if err := d.dom.CreateWithFlags(libvirt.DOMAIN_START_PAUSED); err != nil {
		return fmt.Errorf("vmguest: start %s: %w", d.Opts.Name, err)
	}
	var err error
	if d.Console == nil {
		d.Console, err = DialConsole(ctx, d.socket(), 10*time.Second)
	} else {
		err = d.Console.Reconnect(ctx, 10*time.Second)
	}
	if err != nil {
		return err
	}
	if hook != nil {
		if err := hook(); err != nil {
			return fmt.Errorf("vmguest: start %s: %w", d.Opts.Name, err)
		}
	}
	d.StartedAt = time.Now()
	if err := d.dom.Resume(); err != nil {
		return fmt.Errorf("vmguest: resume %s: %w", d.Opts.Name, err)
	}
	return nil
}

// WaitDHCP waits for the guest's DHCP line printed after console offset from and
// returns its address (a.b.c.d/len) and router; a DHCP failure line is an error at once.
func (d *Domain) WaitDHCP(ctx context.Context, from int, timeout time.Duration) (addr, router string, err error) {
	re := regexp.MustCompile(LineDHCPOK.String() + `|` + LineDHCPFailed.String())
	m, err := d.Console.Wait(ctx, from, re, timeout)
	if err != nil {
		return "", "", err
	}
	if m[2] == "" {
		return "", "", fmt.Errorf("vmguest: %s: %s", d.Opts.Name, strings.TrimSpace(m[0]))
	}
	return m[2], m[3], nil
}

// Shutdown presses the guest's ACPI power button; the guest powers off (LinePoweroff)
// and the domain stops (see WaitState).
func (d *Domain) Shutdown() error {
	if err := d.dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN); err != nil {
		return fmt.Errorf("vmguest: shutdown %s: %w", d.Opts.Name, err)
	}
	return nil
}

// Reboot reboots the guest through ACPI: the guest powers off and libvirt resets it in
// the same QEMU (the console stays connected, the tap stays).
func (d *Domain) Reboot() error {
	if err := d.dom.Reboot(libvirt.DOMAIN_REBOOT_ACPI_POWER_BTN); err != nil {
		return fmt.Errorf("vmguest: reboot %s: %w", d.Opts.Name, err)
	}
	return nil
}

// Reset resets the guest at once (the reset button).
func (d *Domain) Reset() error {
	if err := d.dom.Reset(0); err != nil {
		return fmt.Errorf("vmguest: reset %s: %w", d.Opts.Name, err)
	}
	return nil
}

// Destroy stops the guest at once (pulls the plug); a stopped guest is no error.
func (d *Domain) Destroy() error {
	if st, _, err := d.dom.GetState(); err == nil && st == libvirt.DOMAIN_SHUTOFF {
		return nil
	}
	if err := d.dom.Destroy(); err != nil {
		if st, _, serr := d.dom.GetState(); serr == nil && st == libvirt.DOMAIN_SHUTOFF {
			return nil
		}
		return fmt.Errorf("vmguest: destroy %s: %w", d.Opts.Name, err)
	}
	return nil
}

// State is the domain's state now.
func (d *Domain) State() (libvirt.DomainState, error) {
	st, _, err := d.dom.GetState()
	if err != nil {
		return 0, fmt.Errorf("vmguest: state of %s: %w", d.Opts.Name, err)
	}
	return st, nil
}

// WaitState waits until the domain is in state want.
func (d *Domain) WaitState(ctx context.Context, want libvirt.DomainState, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.State()
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vmguest: %s: state %d, not %d within %v", d.Opts.Name, st, want, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vmguest: %s: waiting for state %d: %w", d.Opts.Name, want, ctx.Err())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

// LiveXML is the domain's XML now (a running guest's names its tap and MAC).
func (d *Domain) LiveXML() (*libvirtxml.Domain, error) {
	s, err := d.dom.GetXMLDesc(0)
	if err != nil {
		return nil, fmt.Errorf("vmguest: xml of %s: %w", d.Opts.Name, err)
	}
	var x libvirtxml.Domain
	if err := x.Unmarshal(s); err != nil {
		return nil, fmt.Errorf("vmguest: xml of %s: %w", d.Opts.Name, err)
	}
	return &x, nil
}

// Rebind looks the domain up by name on conn and uses that handle from now on: after
// its libvirtd restarted, the connection the domain was defined on is dead.
func (d *Domain) Rebind(conn *libvirt.Connect) error {
	dom, err := conn.LookupDomainByName(d.Opts.Name)
	if err != nil {
		return fmt.Errorf("vmguest: look up %s again: %w", d.Opts.Name, err)
	}
	_ = d.dom.Free() // a handle of a dead connection: nothing to free on the daemon
	d.dom = dom
	return nil
}

// Close destroys and undefines the domain, closes the console and removes the guest's
// directory, reporting what failed. Only the first call does.
func (d *Domain) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.Console != nil {
			_ = d.Console.Close()
		}
		errs = append(errs, d.Destroy())
		if err := d.dom.UndefineFlags(libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.DOMAIN_UNDEFINE_NVRAM); err != nil {
			errs = append(errs, fmt.Errorf("vmguest: undefine %s: %w", d.Opts.Name, err))
		}
		errs = append(errs, d.dom.Free(), os.RemoveAll(d.Dir))
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// Migrate live-migrates the running guest to the libvirtd of dconn (client-managed:
// this process talks to both daemons) with QEMU's stream on migrationURI (e.g.
// tcp://ADDR, "" lets libvirt choose), persistent there and undefined here
// (VIR_MIGRATE_LIVE|PERSIST_DEST|UNDEFINE_SOURCE). The destination gets a console
// socket and log of their own in Dir (the source's QEMU still holds its socket while
// both run); the console is reconnected to it and the domain handle is the
// destination's afterwards. The tap keeps its name: the two daemons must create taps in
// different network namespaces.
func (d *Domain) Migrate(ctx context.Context, dconn *libvirt.Connect, migrationURI string) error {
	x, err := d.dom.GetXMLDesc(libvirt.DOMAIN_XML_MIGRATABLE | libvirt.DOMAIN_XML_SECURE)
	if err != nil {
		return fmt.Errorf("vmguest: migratable xml of %s: %w", d.Opts.Name, err)
	}
	d.migrations++
	sock := filepath.Join(d.Dir, fmt.Sprintf("console-m%d.sock", d.migrations))
	log := filepath.Join(d.Dir, fmt.Sprintf("console-m%d.log", d.migrations))
	oldSock, oldLog := d.socketPath(), d.ConsoleLog
	if !strings.Contains(x, oldSock) || !strings.Contains(x, oldLog) {
		return fmt.Errorf("vmguest: %s: console socket %s or log %s not in its xml", d.Opts.Name, oldSock, oldLog)
	}
	x = strings.ReplaceAll(strings.ReplaceAll(x, oldSock, sock), oldLog, log)
	params := &libvirt.DomainMigrateParameters{DestXMLSet: true, DestXML: x}
	if migrationURI != "" {
		params.URISet, params.URI = true, migrationURI
	}
	flags := libvirt.MIGRATE_LIVE | libvirt.MIGRATE_PERSIST_DEST | libvirt.MIGRATE_UNDEFINE_SOURCE
	dom, err := d.dom.Migrate3(dconn, params, flags)
	if err != nil {
		return fmt.Errorf("vmguest: migrate %s: %w", d.Opts.Name, err)
	}
	_ = d.dom.Free()
	d.dom = dom
	d.sock, d.ConsoleLog = sock, log
	if d.Console != nil {
		_ = d.Console.Close()
	}
	d.Console, err = DialConsole(ctx, sock, 10*time.Second)
	return err
}
