package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// fakeLibvirt is a Source over domains held in memory: the test defines, starts,
// stops and undefines them, and the fake sends the events libvirt would.
type fakeLibvirt struct {
	mu         sync.Mutex
	domains    map[string]Domain // by UUID
	notify     func(Event)
	conn       *fakeConn
	down       error // Connect fails with it while set (libvirtd stopped)
	connects   int
	lookupFail map[string]error
}

func newFake() *fakeLibvirt {
	return &fakeLibvirt{domains: map[string]Domain{}, lookupFail: map[string]error{}}
}

type fakeConn struct {
	f    *fakeLibvirt
	done chan struct{}
	once sync.Once
}

func (f *fakeLibvirt) Connect(ctx context.Context, notify func(Event)) (Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	f.connects++
	f.notify = notify
	f.conn = &fakeConn{f: f, done: make(chan struct{})}
	return f.conn, nil
}

func (c *fakeConn) ListDomains(ctx context.Context) ([]Domain, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	select {
	case <-c.done:
		return nil, errors.New("connection closed")
	default:
	}
	var out []Domain
	for _, d := range c.f.domains {
		out = append(out, d)
	}
	return out, nil
}

func (c *fakeConn) LookupDomain(ctx context.Context, uuid string) (Domain, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if err := c.f.lookupFail[uuid]; err != nil {
		return Domain{}, err
	}
	d, ok := c.f.domains[uuid]
	if !ok {
		return Domain{}, fmt.Errorf("domain %s: %w", uuid, ErrNoDomain)
	}
	return d, nil
}

func (c *fakeConn) Done() <-chan struct{} { return c.done }

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// stopDaemon drops the connection and refuses new ones until startDaemon.
func (f *fakeLibvirt) stopDaemon() {
	f.mu.Lock()
	f.down = errors.New("libvirt-sock: connection refused")
	c := f.conn
	f.conn, f.notify = nil, nil
	f.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func (f *fakeLibvirt) startDaemon() {
	f.mu.Lock()
	f.down = nil
	f.mu.Unlock()
}

func (f *fakeLibvirt) connectCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects
}

// set stores the domain and sends ev (when connected).
func (f *fakeLibvirt) set(d Domain, kind EventKind) {
	f.mu.Lock()
	f.domains[d.UUID] = d
	n := f.notify
	f.mu.Unlock()
	if n != nil {
		n(Event{UUID: d.UUID, Name: d.Name, Kind: kind})
	}
}

func (f *fakeLibvirt) undefine(uuid string) {
	f.mu.Lock()
	d := f.domains[uuid]
	delete(f.domains, uuid)
	n := f.notify
	f.mu.Unlock()
	if n != nil {
		n(Event{UUID: uuid, Name: d.Name, Kind: EventUndefined})
	}
}

// nic is one ethernet interface of a test domain.
type nic struct{ mac, tap string }

// domXML is a domain's XML: the live one (with tap names) when active.
func domXML(name, uuid string, active bool, metadata string, nics ...nic) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='qemu'><name>%s</name><uuid>%s</uuid>", name, uuid)
	if metadata != "" {
		fmt.Fprintf(&b, "<metadata>%s</metadata>", metadata)
	}
	b.WriteString("<memory unit='KiB'>131072</memory><os><type arch='x86_64'>hvm</type></os><devices>")
	for _, n := range nics {
		fmt.Fprintf(&b, "<interface type='ethernet'><mac address='%s'/>", n.mac)
		if active {
			fmt.Fprintf(&b, "<target dev='%s'/>", n.tap)
		}
		b.WriteString("</interface>")
	}
	b.WriteString("</devices></domain>")
	return b.String()
}

// fakeDHCP records what the reconciler asks of the DHCP server.
type fakeDHCP struct {
	mu   sync.Mutex
	taps map[string]DHCPConfig
	fail error
}

func (d *fakeDHCP) Set(tap string, c DHCPConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	if d.taps == nil {
		d.taps = map[string]DHCPConfig{}
	}
	d.taps[tap] = c
	return nil
}

func (d *fakeDHCP) Remove(tap string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.taps, tap)
}

func (d *fakeDHCP) get(tap string) (DHCPConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.taps[tap]
	return c, ok
}
