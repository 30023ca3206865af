package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/ipam"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// undoStack holds what a failing ADD must take back, run in reverse order.
type undoStack []struct {
	what string
	fn   func() error
}

func (u *undoStack) push(what string, fn func() error) {
	*u = append(*u, struct {
		what string
		fn   func() error
	}{what, fn})
}

func (u undoStack) run(log *zap.Logger) {
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i].fn(); err != nil {
			log.Error("undo failed", zap.String("step", u[i].what), zap.Error(err))
		} else {
			log.Info("undone", zap.String("step", u[i].what))
		}
	}
}

// add wires a pod: an address from IPAM, the veth pair and its routes, and the
// WorkloadEndpoint. On any failure it undoes, in reverse, what it did.
func (p *Plugin) add(c *call) (err error) {
	if err := c.k8s.require(); err != nil {
		return err
	}
	handle := ipam.PodHandle(c.k8s.Namespace, c.k8s.Pod, c.k8s.ContainerID)
	held := c.prefetch(handle)
	pod, err := c.getPod()
	if err != nil {
		return err
	}
	want, err := parseIPAMAnnotations(pod.Annotations)
	if err != nil {
		return err
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run(c.log)
		}
	}()

	ip, err := c.assign(handle, want, held, &undo)
	if err != nil {
		return err
	}
	c.log.Debug("address", zap.Stringer("ip", ip), zap.String("handle", handle))

	host, err := netlink.NewHandle()
	if err != nil {
		return newErr(CodeDataplane, "cannot open netlink", err)
	}
	defer host.Close()
	podns, err := openPodNS(c.args.Netns)
	if err != nil {
		return newErr(CodeInvalidNetNS, "cannot open the pod's network namespace", err)
	}
	defer podns.Close()

	hostName := VethName(c.k8s.Namespace, c.k8s.Pod)
	hostLink, err := createVeth(host, podns, vethSpec{HostName: hostName, ContName: c.args.IfName, MTU: c.conf.MTU, IP: ip})
	if err != nil {
		return err
	}
	undo.push("delete veth "+hostName, func() error { return deleteHostVeth(host, hostName) })
	if err := configureHostSide(host, hostLink); err != nil {
		return err
	}
	contLink, err := configureContainerSide(podns, c.args.IfName, ip)
	if err != nil {
		return err
	}
	hostIndex := hostLink.Attrs().Index
	if err := routes.AddWorkload(host, ip, hostIndex); err != nil {
		return newErr(CodeDataplane, "cannot add the route to the pod", err)
	}
	undo.push("delete route to "+ip.String(), func() error { return routes.DelWorkload(host, ip, hostIndex) })

	mac := contLink.Attrs().HardwareAddr.String()
	wep := buildWEP(endpoint{Node: c.node, Pod: pod, ContainerID: c.k8s.ContainerID, IfName: c.args.IfName,
		HostIfName: hostName, MAC: mac, IP: ip})
	if err := c.writeWEP(wep); err != nil {
		return err
	}
	undo.push("delete WorkloadEndpoint "+wep.Namespace+"/"+wep.Name, func() error { return c.deleteWEP(wep.Namespace, wep.Name, "") })
	if err := c.waitPolicy(wep.Namespace, wep.Name, hostName, ip); err != nil {
		return err
	}

	res, err := resultAs(buildResult(attachment{HostIfName: hostName, HostMAC: hostLink.Attrs().HardwareAddr.String(),
		IfName: c.args.IfName, MAC: mac, Netns: c.args.Netns, IP: ip}), c.conf.CNIVersion)
	if err != nil {
		return newErr(CodeInternal, "cannot convert the result to CNI "+c.conf.CNIVersion, err)
	}
	if err := res.PrintTo(c.out); err != nil {
		return newErr(CodeIOFailure, "cannot write the result", err)
	}
	c.log.Info("pod wired", zap.Stringer("ip", ip), zap.String("veth", hostName), zap.String("wep", wep.Name))
	return nil
}

// getPod reads the pod named in CNI_ARGS.
func (c *call) getPod() (*corev1.Pod, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	pod, err := datastore.Get[*corev1.Pod](ctx, c.store, c.k8s.Namespace, c.k8s.Pod)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, newErr(CodePodNotFound, fmt.Sprintf("pod %s/%s not found in the datastore", c.k8s.Namespace, c.k8s.Pod), err)
	}
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", c.k8s.Namespace, c.k8s.Pod, err)
	}
	return pod, nil
}

// assign gets the pod's address. An address the handle already holds (a repeated ADD)
// is reused and not released on failure; a new one is, through undo.
// prefetch starts, while the caller reads its Pod, the reads an ADD needs next: the
// addresses the handle already holds (a retried ADD) and IPAM's pools and settings. It
// returns a function that waits for the held addresses.
func (c *call) prefetch(handle string) func() ([]netip.Addr, error) {
	type result struct {
		held []netip.Addr
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := c.ctx()
		defer cancel()
		warmed := make(chan struct{})
		go func() {
			defer close(warmed)
			if err := c.ipam.Warm(ctx, c.node); err != nil {
				c.log.Debug("warm ipam", zap.Error(err)) // Assign reads again and reports it
			}
		}()
		held, err := c.ipam.AddressesOf(ctx, handle)
		<-warmed
		done <- result{held, err}
	}()
	return func() ([]netip.Addr, error) {
		r := <-done
		return r.held, r.err
	}
}

func (c *call) assign(handle string, want podIPAM, prefetched func() ([]netip.Addr, error), undo *undoStack) (netip.Addr, error) {
	held, err := prefetched()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read the addresses of handle %s: %w", handle, err)
	}
	if len(held) > 0 && (!want.IP.IsValid() || slices.Contains(held, want.IP)) {
		ip := held[0]
		if want.IP.IsValid() {
			ip = want.IP
		}
		c.log.Info("reusing the address the handle holds", zap.Stringer("ip", ip), zap.String("handle", handle))
		return ip, nil
	}
	if len(held) > 0 {
		ctx, cancel := c.ctx()
		_, err := c.ipam.ReleaseHandle(ctx, handle)
		cancel()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("release the old addresses of handle %s: %w", handle, err)
		}
	}
	req := ipam.Request{
		HandleID: handle,
		Node:     c.node,
		Pools:    want.Pools,
		IP:       want.IP,
		Attrs: map[string]string{
			ipam.AttrNode:      c.node,
			ipam.AttrNamespace: c.k8s.Namespace,
			ipam.AttrPod:       c.k8s.Pod,
			ipam.AttrContainer: c.k8s.ContainerID,
			ipam.AttrType:      "pod",
		},
	}
	ctx, cancel := c.ctx()
	alloc, err := c.ipam.Assign(ctx, req)
	cancel()
	if err != nil {
		what := "an address"
		if want.IP.IsValid() {
			what = want.IP.String()
		}
		if len(want.Pools) > 0 {
			what += fmt.Sprintf(" from pools %v", want.Pools)
		}
		return netip.Addr{}, fmt.Errorf("assign %s to pod %s/%s on node %s: %w", what, c.k8s.Namespace, c.k8s.Pod, c.node, err)
	}
	undo.push("release handle "+handle, func() error {
		ctx, cancel := c.ctx()
		defer cancel()
		_, err := c.ipam.ReleaseHandle(ctx, handle)
		return err
	})
	return alloc.IP.Unmap(), nil
}

// writeWEP creates the WorkloadEndpoint, or replaces one of the same name (an earlier
// sandbox of the same pod).
func (c *call) writeWEP(wep *v1.WorkloadEndpoint) error {
	for attempt := 0; ; attempt++ {
		ctx, cancel := c.ctx()
		_, err := datastore.Create(ctx, c.store, wep)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			var old *v1.WorkloadEndpoint
			old, err = datastore.Get[*v1.WorkloadEndpoint](ctx, c.store, wep.Namespace, wep.Name)
			if err == nil {
				upd := wep.DeepCopy()
				upd.ResourceVersion = old.ResourceVersion
				_, err = datastore.Update(ctx, c.store, upd)
			}
		}
		cancel()
		if err == nil {
			return nil
		}
		if attempt < 5 && (errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound)) {
			continue
		}
		return fmt.Errorf("write WorkloadEndpoint %s/%s: %w", wep.Namespace, wep.Name, err)
	}
}

// deleteWEP deletes a WorkloadEndpoint; a missing one is no error. With containerID
// set, a WorkloadEndpoint of another container (a newer sandbox) is left alone.
func (c *call) deleteWEP(namespace, name, containerID string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	opts := datastore.DeleteOptions{}
	if containerID != "" {
		wep, err := datastore.Get[*v1.WorkloadEndpoint](ctx, c.store, namespace, name)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read WorkloadEndpoint %s/%s: %w", namespace, name, err)
		}
		if wep.Spec.ContainerID != "" && wep.Spec.ContainerID != containerID {
			c.log.Info("WorkloadEndpoint belongs to another container, left alone",
				zap.String("wep", name), zap.String("its containerID", wep.Spec.ContainerID))
			return nil
		}
		opts.ResourceVersion = wep.ResourceVersion
	}
	err := c.store.Delete(ctx, datastore.KindWorkloadEndpoint, namespace, name, opts)
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("delete WorkloadEndpoint %s/%s: %w", namespace, name, err)
	}
	return nil
}
