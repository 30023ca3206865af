package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"go.uber.org/zap"
)

// policyPoll is how often ADD asks tabby-node about the new endpoint.
const policyPoll = 20 * time.Millisecond

// errPolicyWait is what waitPolicy reports when the time is up.
var errPolicyWait = errors.New("policy not enforced in time")

// waitPolicy waits until tabby-node reports the endpoint namespace/name, on iface with
// ip, enforced by policy (so that the pod's first packet is policed), or that it runs
// with policy off. The endpoint is matched by interface and address too, so the status
// of an earlier pod of the same name cannot answer for this one.
func (c *call) waitPolicy(namespace, name, iface string, ip netip.Addr) error {
	timeout := c.conf.PolicySetupTimeout.Duration
	if timeout <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := localapi.NewClient(c.conf.AgentSocket, timeout)
	start := time.Now()
	last := "tabby-node has not answered"
	notRunning := false
	tick := time.NewTicker(policyPoll)
	defer tick.Stop()
	for {
		done, why, err := policyState(ctx, cl, namespace, name, iface, ip)
		switch {
		case err != nil && ctx.Err() == nil: // (a call cut by the deadline says nothing new)
			last, notRunning = err.Error(), errors.Is(err, localapi.ErrNotRunning)
		case done:
			c.log.Debug("policy enforced", zap.Duration("waited", time.Since(start)))
			return nil
		case err == nil:
			last, notRunning = why, false
		}
		select {
		case <-ctx.Done():
			code := CodeDataplane
			if notRunning {
				code = CodeTryAgainLater
			}
			return newErr(code, fmt.Sprintf("policy of the pod not enforced within %v (policy_setup_timeout)", timeout),
				fmt.Errorf("%w: endpoint %s/%s: %s", errPolicyWait, namespace, name, last))
		case <-tick.C:
		}
	}
}

// policyState asks tabby-node once: done when policy is off or the endpoint is
// enforced; otherwise why not.
func policyState(ctx context.Context, cl *localapi.Client, namespace, name, iface string, ip netip.Addr) (bool, string, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return false, "", err
	}
	if st.Policy != nil && !st.Policy.Enabled {
		return true, "", nil
	}
	for _, e := range st.Felix.Endpoints {
		if e.Namespace != namespace || e.Name != name {
			continue
		}
		if e.Interface != iface || !slices.ContainsFunc(e.IPs, func(s string) bool { return sameAddr(s, ip) }) {
			return false, "tabby-node still reports an earlier endpoint of this name", nil
		}
		if e.PolicyEnforced {
			return true, "", nil
		}
		if e.PolicyMessage != "" {
			return false, e.PolicyMessage, nil
		}
		return false, "tabby-node has not enforced its policy yet", nil
	}
	return false, "tabby-node does not know the endpoint yet", nil
}

// sameAddr reports whether s, an address ("10.65.0.7") or a prefix ("10.65.0.7/32")
// as the local API reports it, is ip.
func sameAddr(s string, ip netip.Addr) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a == ip
	}
	p, err := netip.ParsePrefix(s)
	return err == nil && p.Addr() == ip && p.IsSingleIP()
}
