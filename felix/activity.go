package felix

import (
	"fmt"
	"time"

	"github.com/tabbynet/tabby/ebpf"
)

// WorkloadActivity is what a local workload sent through its interface, as its policy
// program counted it: the allowed packets and when the first and the last passed
// (zero times before the first). The counters start when the programs are attached.
type WorkloadActivity struct {
	Interface     string    `json:"interface"`
	Packets       uint64    `json:"packets"`
	FirstSent     time.Time `json:"firstSent,omitzero"`
	LastSent      time.Time `json:"lastSent,omitzero"`
	DeniedPackets uint64    `json:"deniedPackets"`
}

// WorkloadActivity reports the traffic the workload behind iface sent (the policy
// egress direction: from the workload). It wraps ErrPolicyDisabled or
// ErrPolicyNotReady without the datapath, and ErrUnknownEndpoint when iface has no
// programs. It reads the datapath's maps; it is safe from any goroutine.
func (f *Felix) WorkloadActivity(iface string) (WorkloadActivity, error) {
	s, err := f.snapshot()
	if err != nil {
		return WorkloadActivity{}, err
	}
	for idx, name := range s.iface {
		if name != iface {
			continue
		}
		c, err := s.dp.EndpointCounter(idx, ebpf.Egress)
		if err != nil {
			return WorkloadActivity{}, fmt.Errorf("activity of %s: %w", iface, err)
		}
		return WorkloadActivity{Interface: iface, Packets: c.AllowedPackets, FirstSent: c.FirstAllowed,
			LastSent: c.LastAllowed, DeniedPackets: c.DeniedPackets}, nil
	}
	return WorkloadActivity{}, fmt.Errorf("interface %s: %w", iface, ErrUnknownEndpoint)
}
