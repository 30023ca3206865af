package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// DefaultGateway is the on-link next hop every Tabby workload routes through;
// the host answers ARP for it by proxy ARP. It is also the server identifier.
var DefaultGateway = netip.AddrFrom4([4]byte{169, 254, 1, 1})

// DefaultLeaseTime is long: the address belongs to the workload endpoint, so
// renewing only keeps the client's timers happy.
const DefaultLeaseTime = 24 * time.Hour

// Config says what one guest interface is offered.
type Config struct {
	// Interface is the host-side interface (the tap) the guest sits behind.
	Interface string
	// Netns, when set, is the path of the network namespace the interface
	// lives in (for example /run/netns/NAME or /proc/PID/ns/net); empty means
	// the namespace of the calling process.
	Netns string
	// MAC is the guest's MAC: the only client answered.
	MAC net.HardwareAddr
	// Addr is the guest's /32.
	Addr netip.Addr
	// Gateway is the router and server identifier; zero means DefaultGateway.
	Gateway netip.Addr
	// DNS servers, domain search list and host name handed to the guest.
	DNS           []netip.Addr
	SearchDomains []string
	Hostname      string
	// LeaseTime; zero means DefaultLeaseTime.
	LeaseTime time.Duration
	// MTU, when non-zero, is sent as option 26.
	MTU int
}

// withDefaults returns c with zero fields defaulted, or an error naming the
// first bad field.
func (c Config) withDefaults() (Config, error) {
	if !c.Gateway.IsValid() {
		c.Gateway = DefaultGateway
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = DefaultLeaseTime
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	if c.Interface == "" || len(c.Interface) >= 16 {
		errs = append(errs, fmt.Errorf("interface %q: want a name of 1 to 15 bytes", c.Interface))
	}
	if len(c.MAC) != 6 {
		errs = append(errs, fmt.Errorf("mac %q: want a 6-byte Ethernet address", c.MAC))
	}
	if !c.Addr.Is4() || c.Addr.IsUnspecified() || c.Addr.IsMulticast() || c.Addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		errs = append(errs, fmt.Errorf("addr %v: want a unicast IPv4 address", c.Addr))
	}
	if !c.Gateway.Is4() || c.Gateway.IsUnspecified() {
		errs = append(errs, fmt.Errorf("gateway %v: want an IPv4 address", c.Gateway))
	}
	if c.Gateway == c.Addr {
		errs = append(errs, fmt.Errorf("addr %v: equals the gateway", c.Addr))
	}
	for _, d := range c.DNS {
		if !d.Is4() {
			errs = append(errs, fmt.Errorf("dns %v: want an IPv4 address", d))
		}
	}
	for _, s := range c.SearchDomains {
		if s == "" || len(s) > 253 {
			errs = append(errs, fmt.Errorf("search domain %q: want a domain name", s))
		}
	}
	if len(c.Hostname) > 255 {
		errs = append(errs, fmt.Errorf("hostname %q: longer than 255 bytes", c.Hostname))
	}
	if c.LeaseTime < time.Minute || c.LeaseTime > 0xfffffffe*time.Second {
		errs = append(errs, fmt.Errorf("lease time %v: want between 1m and 136y", c.LeaseTime))
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu %d: want 0 or 68..65535", c.MTU))
	}
	return errors.Join(errs...)
}

// Equal reports whether two configs offer the same thing on the same device.
func (c Config) Equal(o Config) bool {
	return c.Interface == o.Interface && c.Netns == o.Netns &&
		bytes.Equal(c.MAC, o.MAC) && c.Addr == o.Addr && c.Gateway == o.Gateway &&
		slices.Equal(c.DNS, o.DNS) && slices.Equal(c.SearchDomains, o.SearchDomains) &&
		c.Hostname == o.Hostname && c.LeaseTime == o.LeaseTime && c.MTU == o.MTU
}

// clone copies the slices so a caller may reuse its own.
func (c Config) clone() Config {
	c.MAC = slices.Clone(c.MAC)
	c.DNS = slices.Clone(c.DNS)
	c.SearchDomains = slices.Clone(c.SearchDomains)
	return c
}
