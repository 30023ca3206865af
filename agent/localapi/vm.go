package localapi

import (
	"context"
	"time"
)

// PathVMs answers GET only: the node's libvirt watcher (VMStatus).
const PathVMs = "/vms"

// VMStatus is the answer of GET /vms: the libvirt watcher of tabby-node (package
// vmendpoint), which makes the taps of the node's guests WorkloadEndpoints.
type VMStatus struct {
	// Enabled is false when tabby-node runs with --vm-endpoints=false (then nothing
	// else is set).
	Enabled bool `json:"enabled"`
	// URI is the libvirt connection followed (e.g. qemu:///system).
	URI       string `json:"uri,omitempty"`
	Connected bool   `json:"connected"`
	// Error says why it is not connected (libvirt not installed, libvirtd down...).
	Error string `json:"error,omitempty"`
	// Since is when the connection was made or lost; LastResync when every domain was
	// last listed and reconciled; Reconnects counts the connection attempts after the first (each failed try while libvirtd is down counts).
	Since      *time.Time `json:"since,omitempty"`
	LastResync *time.Time `json:"lastResync,omitempty"`
	Reconnects int        `json:"reconnects"`
	Domains    []VMDomain `json:"domains"`
}

// VMDomain is one libvirt domain as the watcher last reconciled it.
type VMDomain struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// State is "running" while libvirt reports the domain active (running, paused or
	// shutting down: its taps exist), "standby" while it is paused for a live
	// migration and another node routes it (its endpoints here are policed, not
	// routed), and "shut off" otherwise.
	State     string       `json:"state"`
	Endpoints []VMEndpoint `json:"endpoints"`
	// Problems in the domain's Tabby metadata (left out, the rest applied).
	Problems []string `json:"problems,omitempty"`
	// LastError is the error of the last reconcile ("" when it succeeded; it is
	// retried with backoff); LastSync when it last succeeded.
	LastError string     `json:"lastError,omitempty"`
	LastSync  *time.Time `json:"lastSync,omitempty"`
	// Migration is the last live migration of the domain to this node.
	Migration *VMMigration `json:"migration,omitempty"`
}

// VMMigration is a live migration to this node: when this node took the guest over,
// from which node, and the blackout: from the guest's last packet through the source
// node's tap to its first through this node's (both nodes' clocks must agree).
type VMMigration struct {
	From           string     `json:"from,omitempty"`
	Resumed        time.Time  `json:"resumed"`
	LastSentThere  *time.Time `json:"lastSentThere,omitempty"`
	FirstSentHere  *time.Time `json:"firstSentHere,omitempty"`
	BlackoutMillis *float64   `json:"blackoutMillis,omitempty"`
	// Error says why the blackout is not known (yet).
	Error string `json:"error,omitempty"`
}

// VMEndpoint is one WorkloadEndpoint the watcher wrote for a guest NIC.
type VMEndpoint struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Tap       string `json:"tap"`
	MAC       string `json:"mac"`
	IP        string `json:"ip"`
}

// VM states of VMDomain.State.
const (
	VMStateRunning = "running"
	VMStateStandby = "standby"
	VMStateShutOff = "shut off"
)

// VMs calls GET /vms.
func (c *Client) VMs(ctx context.Context) (*VMStatus, error) {
	var s VMStatus
	if err := c.get(ctx, PathVMs, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
