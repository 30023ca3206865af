package vmendpoint

import "github.com/tabbynet/tabby/vmendpoint/dhcp"

// DHCPServers adapts vmendpoint/dhcp's Manager (a server per tap) to DHCP, with the
// DNS settings every guest gets.
type DHCPServers struct {
	M   *dhcp.Manager
	DNS dhcp.Config // only DNS and SearchDomains are read
}

var _ DHCP = (*DHCPServers)(nil)

// Set serves c on its tap: the guest's /32, router 169.254.1.1, the DNS settings.
func (s *DHCPServers) Set(tap string, c DHCPConfig) error {
	return s.M.Set(tap, dhcp.Config{Interface: tap, MAC: c.MAC, Addr: c.Address.Addr(), Hostname: c.Hostname,
		DNS: s.DNS.DNS, SearchDomains: s.DNS.SearchDomains})
}

// Remove stops the tap's server.
func (s *DHCPServers) Remove(tap string) { s.M.Remove(tap) }
