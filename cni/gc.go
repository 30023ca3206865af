package cni

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/ipam"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// gc removes, on this node, every attachment not in cni.dev/valid-attachments: the
// WorkloadEndpoint, its cali* veth and route, and its IPAM handle; then every pod handle
// with allocations on this node whose container is not in the list.
func (p *Plugin) gc(c *call) error {
	valid := map[types.GCAttachment]bool{}
	validCIDs := map[string]bool{}
	for _, a := range c.conf.validAttachments() {
		valid[a] = true
		validCIDs[a.ContainerID] = true
	}
	weps, err := c.nodeWEPs()
	if err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return newErr(CodeDataplane, "cannot open netlink", err)
	}
	defer host.Close()

	var errs []error
	released := map[string]bool{}
	for _, w := range weps {
		if valid[types.GCAttachment{ContainerID: w.Spec.ContainerID, IfName: w.Spec.Endpoint}] {
			continue
		}
		c.log.Info("collecting stale attachment", zap.String("wep", w.Namespace+"/"+w.Name),
			zap.String("containerID", w.Spec.ContainerID), zap.String("veth", w.Spec.InterfaceName))
		if err := c.collectWEP(host, w); err != nil {
			errs = append(errs, err)
			continue
		}
		released[ipam.PodHandle(w.Namespace, w.Spec.Workload, w.Spec.ContainerID)] = true
	}

	handles, err := c.podHandlesOnNode()
	if err != nil {
		errs = append(errs, err)
	}
	for h, cid := range handles {
		if validCIDs[cid] || released[h] {
			continue
		}
		c.log.Info("releasing stale IPAM handle", zap.String("handle", h))
		ctx, cancel := c.ctx()
		if _, err := c.ipam.ReleaseHandle(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("release handle %s: %w", h, err))
		}
		cancel()
	}
	if len(errs) > 0 {
		return fmt.Errorf("gc: %w", errors.Join(errs...))
	}
	return nil
}

// collectWEP removes one stale attachment: route, veth, handle, endpoint.
func (c *call) collectWEP(host *netlink.Handle, w *v1.WorkloadEndpoint) error {
	ifName := w.Spec.InterfaceName
	if strings.HasPrefix(ifName, VethPrefix) {
		idx := 0
		if l, err := host.LinkByName(ifName); err == nil {
			idx = l.Attrs().Index
		}
		for _, ip := range wepAddrs(w) {
			if idx > 0 {
				if err := routes.DelWorkload(host, ip, idx); err != nil {
					return err
				}
			}
		}
		if err := deleteHostVeth(host, ifName); err != nil {
			return err
		}
	}
	handle := ipam.PodHandle(w.Namespace, w.Spec.Workload, w.Spec.ContainerID)
	ctx, cancel := c.ctx()
	_, err := c.ipam.ReleaseHandle(ctx, handle)
	cancel()
	if err != nil {
		return fmt.Errorf("release handle %s: %w", handle, err)
	}
	return c.deleteWEP(w.Namespace, w.Name, w.Spec.ContainerID)
}

// podHandlesOnNode maps each pod handle with an allocation on this node to its
// container id.
func (c *call) podHandlesOnNode() (map[string]string, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, c.store, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPAM blocks: %w", err)
	}
	out := map[string]string{}
	for _, b := range blocks {
		for _, a := range b.Spec.Attributes {
			if a.HandleID == nil || !strings.HasPrefix(*a.HandleID, "pod.") || a.Secondary[ipam.AttrNode] != c.node {
				continue
			}
			cid := a.Secondary[ipam.AttrContainer]
			if cid == "" {
				cid = (*a.HandleID)[strings.LastIndex(*a.HandleID, ".")+1:]
			}
			out[*a.HandleID] = cid
		}
	}
	return out, nil
}
