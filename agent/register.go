package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Address types and the orchestrator name the agent writes into its Node resource.
const (
	AddressTabbyNodeIP = "TabbyNodeIP"
	AddressInternalIP  = "InternalIP"
	AddressExternalIP  = "ExternalIP"
	OrchestratorK8s    = "k8s"
)

// registerAttempts bounds the compare-and-swap retries of one Register call.
const registerAttempts = 10

// Registration is what the agent owns in its tabby.dev Node.
type Registration struct {
	Name string
	IPv4 netip.Prefix
}

// Register creates or updates the tabby.dev Node named r.Name so that it carries the
// node's address. It owns, and only changes:
//   - spec.bgp.ipv4Address;
//   - the spec.addresses entry of type TabbyNodeIP (the address with its prefix), and
//     the InternalIP and ExternalIP entries, copied from the Kubernetes Node of the same
//     name when there is one (left alone when there is none);
//   - the spec.orchRefs entry of orchestrator k8s.
//
// Everything else (asNumber, routeReflectorClusterID, ipv6Address, other addresses and
// orchRefs, labels, annotations) is kept as the user wrote it. Writes are
// compare-and-swap: a conflicting writer makes it read again and retry.
func Register(ctx context.Context, s datastore.Store, r Registration, log *zap.Logger) (*v1.Node, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if r.Name == "" || !r.IPv4.IsValid() {
		return nil, fmt.Errorf("register node: need a name and an IPv4 address, have %q and %v", r.Name, r.IPv4)
	}
	var lastErr error
	for attempt := 1; attempt <= registerAttempts; attempt++ {
		k8sAddrs, haveK8s, err := kubernetesAddresses(ctx, s, r.Name)
		if err != nil {
			return nil, err
		}
		cur, err := datastore.Get[*v1.Node](ctx, s, "", r.Name)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			n := &v1.Node{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "Node"},
				ObjectMeta: metav1.ObjectMeta{Name: r.Name}}
			apply(n, r, k8sAddrs, haveK8s)
			got, err := datastore.Create(ctx, s, n)
			if errors.Is(err, datastore.ErrAlreadyExists) {
				lastErr = err
				log.Debug("node created by someone else meanwhile, retrying", zap.Int("attempt", attempt))
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create node %q: %w", r.Name, err)
			}
			log.Info("node registered", zap.String("node", r.Name), zap.Stringer("ipv4", r.IPv4))
			return got, nil
		case err != nil:
			return nil, fmt.Errorf("read node %q: %w", r.Name, err)
		}
		want := cur.DeepCopy()
		apply(want, r, k8sAddrs, haveK8s)
		if reflect.DeepEqual(want.Spec, cur.Spec) {
			log.Info("node registration up to date", zap.String("node", r.Name), zap.Stringer("ipv4", r.IPv4))
			return cur, nil
		}
		got, err := datastore.Update(ctx, s, want)
		if errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) {
			lastErr = err
			log.Debug("node changed meanwhile, retrying", zap.Int("attempt", attempt), zap.Error(err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update node %q: %w", r.Name, err)
		}
		log.Info("node registration updated", zap.String("node", r.Name), zap.Stringer("ipv4", r.IPv4))
		return got, nil
	}
	return nil, fmt.Errorf("register node %q: gave up after %d attempts: %w", r.Name, registerAttempts, lastErr)
}

// apply sets the fields the agent owns on n.
func apply(n *v1.Node, r Registration, k8sAddrs []v1.NodeAddress, haveK8s bool) {
	if n.Spec.BGP == nil {
		n.Spec.BGP = &v1.NodeBGPSpec{}
	}
	n.Spec.BGP.IPv4Address = r.IPv4.String()

	addrs := []v1.NodeAddress{{Address: r.IPv4.String(), Type: AddressTabbyNodeIP}}
	if haveK8s {
		addrs = append(addrs, k8sAddrs...)
	}
	for _, a := range n.Spec.Addresses {
		switch {
		case a.Type == AddressTabbyNodeIP:
		case haveK8s && (a.Type == AddressInternalIP || a.Type == AddressExternalIP):
		default:
			addrs = append(addrs, a)
		}
	}
	n.Spec.Addresses = addrs

	refs := []v1.OrchRef{{NodeName: r.Name, Orchestrator: OrchestratorK8s}}
	for _, o := range n.Spec.OrchRefs {
		if o.Orchestrator != OrchestratorK8s {
			refs = append(refs, o)
		}
	}
	n.Spec.OrchRefs = refs
}

// kubernetesAddresses reads the InternalIP and ExternalIP addresses of the Kubernetes
// Node of the same name; ok is false when there is no such Node (or it may not be read).
func kubernetesAddresses(ctx context.Context, s datastore.Store, name string) (addrs []v1.NodeAddress, ok bool, err error) {
	kn, err := datastore.Get[*corev1.Node](ctx, s, "", name)
	if errors.Is(err, datastore.ErrUnavailable) {
		return nil, false, fmt.Errorf("read kubernetes node %q: %w", name, err)
	}
	if err != nil {
		return nil, false, nil
	}
	for _, a := range kn.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			addrs = append(addrs, v1.NodeAddress{Address: a.Address, Type: string(a.Type)})
		}
	}
	return addrs, true, nil
}
