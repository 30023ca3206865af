package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/ipam"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// del unwires a pod interface: routes, veth, the IPAM handle and the WorkloadEndpoint.
// It is idempotent: a second DEL, a missing network namespace and a missing pod are
// fine. Local cleanup happens even when the datastore is down; the datastore part then
// fails with code 11 so the runtime retries.
func (p *Plugin) del(c *call) error {
	k := c.k8s
	if k.ContainerID == "" {
		return newErr(CodeInvalidEnv, "no container id", errors.New("CNI_CONTAINERID is empty"))
	}
	var dsErrs []error
	if k.Namespace == "" || k.Pod == "" {
		// No pod in CNI_ARGS: find its endpoint by container id.
		wep, err := c.findWEP(k.ContainerID, c.args.IfName)
		if err != nil {
			dsErrs = append(dsErrs, err)
		} else if wep != nil {
			k.Namespace, k.Pod = wep.Namespace, wep.Spec.Workload
		}
	}

	host, err := netlink.NewHandle()
	if err != nil {
		return newErr(CodeDataplane, "cannot open netlink", err)
	}
	defer host.Close()

	// What the datastore knows: the addresses and the endpoint.
	var handle string
	var addrs []netip.Addr
	var wep *v1.WorkloadEndpoint
	wepKnown := false
	if k.Namespace != "" && k.Pod != "" {
		handle = ipam.PodHandle(k.Namespace, k.Pod, k.ContainerID)
		ctx, cancel := c.ctx()
		addrs, err = c.ipam.AddressesOf(ctx, handle)
		if err != nil {
			dsErrs = append(dsErrs, fmt.Errorf("read the addresses of handle %s: %w", handle, err))
		}
		wep, err = datastore.Get[*v1.WorkloadEndpoint](ctx, c.store, k.Namespace, WEPName(c.node, k.Pod, c.args.IfName))
		cancel()
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			wep, wepKnown = nil, true
		case err != nil:
			wep = nil
			dsErrs = append(dsErrs, fmt.Errorf("read WorkloadEndpoint: %w", err))
		default:
			wepKnown = true
			if wep.Spec.ContainerID == k.ContainerID {
				addrs = append(addrs, wepAddrs(wep)...)
			}
		}
	}

	// The dataplane: the pod side first (its peer goes with it), then the host side by
	// name when the namespace is gone, unless a newer sandbox of the pod owns that name.
	var localErrs []error
	hostIndex := 0
	if pod, err := openPodNS(c.args.Netns); err == nil {
		idx, err := deletePodSide(pod, c.args.IfName)
		pod.Close()
		hostIndex = idx
		if err != nil {
			localErrs = append(localErrs, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log.Info("pod network namespace unusable, cleaning up the host side by name", zap.Error(err))
	}
	for _, ip := range addrs {
		if err := routes.DelWorkload(host, ip, hostIndex); err != nil {
			localErrs = append(localErrs, err)
		}
	}
	if k.Pod != "" {
		otherOwner := wep != nil && wep.Spec.ContainerID != "" && wep.Spec.ContainerID != k.ContainerID
		if wepKnown && !otherOwner {
			if err := deleteHostVeth(host, VethName(k.Namespace, k.Pod)); err != nil {
				localErrs = append(localErrs, err)
			}
		}
	}

	// The datastore: release the handle, delete the endpoint (if it is this container's);
	// not worth waiting out more timeouts when it did not answer the reads.
	if unreachable(dsErrs) {
		return fmt.Errorf("delete: %w", errors.Join(dsErrs...))
	}
	if handle != "" {
		ctx, cancel := c.ctx()
		if _, err := c.ipam.ReleaseHandle(ctx, handle); err != nil {
			dsErrs = append(dsErrs, fmt.Errorf("release handle %s: %w", handle, err))
		}
		cancel()
		if err := c.deleteWEP(k.Namespace, WEPName(c.node, k.Pod, c.args.IfName), k.ContainerID); err != nil {
			dsErrs = append(dsErrs, err)
		}
	} else {
		// Without the pod's name, release whatever this container holds on this node.
		if err := c.releaseContainer(k.ContainerID); err != nil {
			dsErrs = append(dsErrs, err)
		}
	}
	if len(localErrs) > 0 {
		return newErr(CodeDataplane, "cannot remove the pod's interface", errors.Join(append(localErrs, dsErrs...)...))
	}
	if len(dsErrs) > 0 {
		return fmt.Errorf("delete: %w", errors.Join(dsErrs...))
	}
	return nil
}

// findWEP finds this node's pod endpoint of a container and interface (nil if none).
func (c *call) findWEP(containerID, ifName string) (*v1.WorkloadEndpoint, error) {
	weps, err := c.nodeWEPs()
	if err != nil {
		return nil, err
	}
	for _, w := range weps {
		if w.Spec.ContainerID == containerID && (w.Spec.Endpoint == ifName || w.Spec.Endpoint == "") {
			return w, nil
		}
	}
	return nil, nil
}

// nodeWEPs lists the WorkloadEndpoints the plugin made on this node.
func (c *call) nodeWEPs() ([]*v1.WorkloadEndpoint, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	all, err := datastore.List[*v1.WorkloadEndpoint](ctx, c.store,
		datastore.ListOptions{LabelSelector: LabelOrchestrator + "=" + OrchestratorK8s})
	if err != nil {
		return nil, fmt.Errorf("list WorkloadEndpoints: %w", err)
	}
	var out []*v1.WorkloadEndpoint
	for _, w := range all {
		if w.Spec.Node == c.node && w.Spec.Orchestrator == v1.OrchestratorPod {
			out = append(out, w)
		}
	}
	return out, nil
}

// releaseContainer releases every pod handle of a container on this node.
func (c *call) releaseContainer(containerID string) error {
	handles, err := c.podHandlesOnNode()
	if err != nil {
		return err
	}
	var errs []error
	for h, cid := range handles {
		if cid != containerID {
			continue
		}
		ctx, cancel := c.ctx()
		if _, err := c.ipam.ReleaseHandle(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("release handle %s: %w", h, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// wepAddrs parses a WorkloadEndpoint's ipNetworks.
func wepAddrs(w *v1.WorkloadEndpoint) []netip.Addr {
	var out []netip.Addr
	for _, n := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// unreachable reports whether one of errs says the datastore did not answer.
func unreachable(errs []error) bool {
	for _, err := range errs {
		if errors.Is(err, datastore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return true
		}
	}
	return false
}
