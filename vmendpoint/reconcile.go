package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAM is what the reconciler needs of *ipam.Allocator.
type IPAM interface {
	Assign(ctx context.Context, req ipam.Request) (ipam.Allocation, error)
	AddressesOf(ctx context.Context, handleID string) ([]netip.Addr, error)
	ReleaseHandle(ctx context.Context, handleID string) ([]netip.Addr, error)
	Lookup(ctx context.Context, ip netip.Addr) (ipam.AddressInfo, error)
	Adopt(ctx context.Context, handleID, node string) ([]netip.Addr, error)
}

// DHCPConfig is what the DHCP server on one tap hands the guest.
type DHCPConfig struct {
	Tap string
	// MAC of the guest NIC (the only client answered).
	MAC net.HardwareAddr
	// Address is the guest's /32 (the gateway is 169.254.1.1, as for pods).
	Address  netip.Prefix
	Hostname string
}

// DHCP is the per-tap DHCP server (vmendpoint/dhcp's Manager, through a small
// adapter); nil means none. Set serves c on tap, replacing what was served there (the
// same c again changes nothing); an error is retried with the domain. Remove stops
// serving tap.
type DHCP interface {
	Set(tap string, c DHCPConfig) error
	Remove(tap string)
}

// ReconcilerConfig builds a Reconciler.
type ReconcilerConfig struct {
	Options
	Store datastore.Store
	IPAM  IPAM
	// DHCP is told the address of every running tap (optional).
	DHCP DHCP
	// Activity reads the guests' packet times, for the blackout of a live migration
	// (optional: without it the blackout is not measured).
	Activity Activity
	// Registry takes the migration metrics (optional).
	Registry prometheus.Registerer
	Logger   *zap.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Reconciler writes the WorkloadEndpoints of this node's libvirt guests and holds
// their addresses. It is called by the Watcher, one call at a time.
type Reconciler struct {
	cfg ReconcilerConfig
	log *zap.Logger

	metrics *migrationMetrics

	mu         sync.Mutex
	domains    map[string]*DomainStatus    // by UUID
	taps       map[string]string           // tap -> UUID of the domain the DHCP server serves on it
	migrations map[string]*MigrationStatus // by UUID: the last live migration here
	measuring  map[string]bool             // handovers measured (endpoint, source, last packet)
}

// writeAttempts bounds the compare-and-swap retries of one WorkloadEndpoint write; the
// Watcher retries the whole domain with backoff after that.
const writeAttempts = 5

// NewReconciler checks cfg and builds a Reconciler.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("vmendpoint: no datastore")
	case cfg.IPAM == nil:
		return nil, errors.New("vmendpoint: no ipam")
	case cfg.Node == "":
		return nil, errors.New("vmendpoint: no node name")
	case cfg.DefaultNamespace == "":
		return nil, errors.New("vmendpoint: no default namespace")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMigrationMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger, metrics: m, domains: map[string]*DomainStatus{}, taps: map[string]string{},
		migrations: map[string]*MigrationStatus{}, measuring: map[string]bool{}}, nil
}

// SyncDomain makes the datastore match one domain: for an active domain an address
// and a WorkloadEndpoint per tap (and the DHCP server on it); for an inactive one no
// WorkloadEndpoint, but its addresses stay held. An error leaves the rest for a retry.
func (r *Reconciler) SyncDomain(ctx context.Context, d Domain) error {
	err := r.syncDomain(ctx, d)
	r.setError(d.UUID, d.Name, err)
	return err
}

func (r *Reconciler) syncDomain(ctx context.Context, d Domain) error {
	want, err := DesiredEndpoints(d, r.cfg.Options)
	if err != nil {
		return err
	}
	for _, p := range want.Problems {
		r.log.Warn("domain metadata", zap.String("domain", d.Name), zap.String("problem", p))
	}
	have, others, err := r.endpointsOf(ctx, d.UUID)
	if err != nil {
		return err
	}
	if d.MigratingOut && !standby(d, others) {
		// The source, its guest paused for the last pages: hand over to the
		// destination's standby endpoints, then wait here. Only the source: after the
		// handover the destination, still paused, looks the same from the datastore
		// (its endpoint live, the source's on standby).
		handed, err := r.handOver(ctx, d, have, others)
		if err != nil {
			return err
		}
		if handed {
			if have, others, err = r.endpointsOf(ctx, d.UUID); err != nil {
				return err
			}
		}
	}
	wait := standby(d, others)
	st := DomainStatus{UUID: d.UUID, Name: d.Name, Active: d.Active, Standby: wait, Problems: want.Problems}
	keep := map[string]bool{}
	var errs []error
	var written []*v1.WorkloadEndpoint
	for _, e := range want.Endpoints {
		keep[e.Namespace+"/"+e.Name] = true
		var ip netip.Addr
		if wait {
			ip, err = r.heldAddress(ctx, e)
		} else {
			ip, err = r.address(ctx, e)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		wep := buildWEP(r.cfg.Node, e, ip)
		wep.Spec.Standby = wait
		old := have[e.Namespace+"/"+e.Name]
		if err := r.write(ctx, wep, old); err != nil {
			errs = append(errs, err)
			continue
		}
		if old != nil {
			wep.Annotations = old.Annotations // the handover's, for the blackout
		}
		written = append(written, wep)
		st.Endpoints = append(st.Endpoints, EndpointStatus{Namespace: e.Namespace, Name: e.Name, Tap: e.Tap, MAC: e.MAC, IP: ip.String()})
		hw, _ := net.ParseMAC(e.MAC) // DesiredEndpoints parsed it
		if err := r.setDHCP(d.UUID, DHCPConfig{Tap: e.Tap, MAC: hw, Address: netip.PrefixFrom(ip, ip.BitLen()), Hostname: e.Hostname}); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Running && !wait {
		// The guest runs here: other nodes' live endpoints of it go (a post-copy
		// migration, or one that failed after the handover), and a handover here is
		// measured.
		if err := r.takeOver(ctx, d, others); err != nil {
			errs = append(errs, err)
		}
		r.startMeasures(ctx, d.UUID, written)
	}
	for key, w := range have {
		if keep[key] {
			continue
		}
		if err := r.deleteWEP(ctx, w); err != nil {
			errs = append(errs, err)
		}
	}
	r.removeDHCP(d.UUID, func(tap string) bool {
		return !slices.ContainsFunc(want.Endpoints, func(e Endpoint) bool { return e.Tap == tap })
	})
	r.mu.Lock()
	st.LastSync = r.cfg.Now()
	r.domains[d.UUID] = &st
	r.mu.Unlock()
	return errors.Join(errs...)
}

// ForgetDomain handles a domain that is no longer defined here: its WorkloadEndpoints
// on this node go, and with release its addresses are released too, unless the domain
// runs on another node now (a WorkloadEndpoint elsewhere names its UUID). release is
// false for a domain that migrated away.
func (r *Reconciler) ForgetDomain(ctx context.Context, uuid, name string, release bool) error {
	err := r.forgetDomain(ctx, uuid, release)
	if err != nil {
		r.setError(uuid, name, err)
		return err
	}
	r.mu.Lock()
	delete(r.domains, uuid)
	delete(r.migrations, uuid)
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) forgetDomain(ctx context.Context, uuid string, release bool) error {
	have, _, err := r.endpointsOf(ctx, uuid)
	if err != nil {
		return err
	}
	for _, w := range have {
		if err := r.deleteWEP(ctx, w); err != nil {
			return err
		}
	}
	r.removeDHCP(uuid, func(string) bool { return true })
	if !release {
		return nil
	}
	return r.releaseDomain(ctx, uuid)
}

// releaseDomain releases every handle of the domain, unless it runs elsewhere.
func (r *Reconciler) releaseDomain(ctx context.Context, uuid string) error {
	if node, err := r.runsElsewhere(ctx, uuid); err != nil {
		return err
	} else if node != "" {
		r.log.Info("domain runs on another node: its addresses are kept", zap.String("uuid", uuid), zap.String("node", node))
		return nil
	}
	handles, err := r.vmHandles(ctx)
	if err != nil {
		return err
	}
	for _, h := range handles {
		if handleUUID(h) != uuid {
			continue
		}
		ips, err := r.cfg.IPAM.ReleaseHandle(ctx, h)
		if err != nil {
			return fmt.Errorf("release handle %s: %w", h, err)
		}
		r.log.Info("released the addresses of an undefined domain", zap.String("handle", h), zap.Any("ips", ips))
	}
	return nil
}

// Resync reconciles every domain libvirt listed (a fresh, complete list) and forgets,
// releasing their addresses, the domains it knows of that are no longer defined here:
// WorkloadEndpoints of this node naming another UUID, and VM handles this node
// allocated. keepHandles names domains to forget without release (migrated away). It
// returns the UUIDs that failed, with their errors.
func (r *Reconciler) Resync(ctx context.Context, doms []Domain, keepHandles map[string]bool) map[string]error {
	failed := map[string]error{}
	listed := map[string]bool{}
	for _, d := range doms {
		listed[d.UUID] = true
		if err := r.SyncDomain(ctx, d); err != nil {
			failed[d.UUID] = err
		}
	}
	weps, err := r.listWEPs(ctx)
	if err != nil {
		failed[""] = err
		return failed
	}
	gone := map[string]string{} // UUID -> domain name
	for _, w := range weps {
		if !listed[w.Spec.ContainerID] {
			gone[w.Spec.ContainerID] = w.Spec.Workload
		}
	}
	handles, err := r.vmHandles(ctx)
	if err != nil {
		failed[""] = err
		return failed
	}
	for _, h := range handles {
		uuid := handleUUID(h)
		if _, ok := gone[uuid]; ok || listed[uuid] || uuid == "" {
			continue
		}
		mine, err := r.allocatedHere(ctx, h)
		if err != nil {
			failed[uuid] = err
			continue
		}
		if mine {
			gone[uuid] = ""
		}
	}
	for uuid, name := range gone {
		if err := r.ForgetDomain(ctx, uuid, name, !keepHandles[uuid]); err != nil {
			failed[uuid] = err
		}
	}
	r.mu.Lock()
	for uuid := range r.domains {
		if !listed[uuid] && failed[uuid] == nil {
			delete(r.domains, uuid)
		}
	}
	r.mu.Unlock()
	return failed
}

// address returns the endpoint's address: the one its handle holds (so a reboot, an
// agent restart or a move to another node keeps it), the fixed one from the metadata,
// or a new one from IPAM. A new address is never released on a later failure: the
// handle is stable, so the retry finds it.
func (r *Reconciler) address(ctx context.Context, e Endpoint) (netip.Addr, error) {
	handle := ipam.VMHandle(e.UUID, e.MAC)
	held, err := r.cfg.IPAM.AddressesOf(ctx, handle)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read the addresses of handle %s: %w", handle, err)
	}
	if len(held) > 0 && (!e.IP.IsValid() || slices.Contains(held, e.IP)) {
		// A domain that moved here (live migration, or started on this host after
		// another) keeps its address, which becomes this node's: its /32 is advertised
		// from here (a borrowed address when the block is affine elsewhere).
		if moved, err := r.cfg.IPAM.Adopt(ctx, handle, r.cfg.Node); err != nil {
			return netip.Addr{}, fmt.Errorf("adopt the addresses of handle %s: %w", handle, err)
		} else if len(moved) > 0 {
			r.log.Info("addresses moved to this node", zap.String("domain", e.Domain), zap.String("tap", e.Tap),
				zap.Stringers("ips", moved))
		}
		if e.IP.IsValid() {
			return e.IP, nil
		}
		return held[0].Unmap(), nil
	}
	if len(held) > 0 {
		// The metadata now fixes another address: give the old one back first.
		if _, err := r.cfg.IPAM.ReleaseHandle(ctx, handle); err != nil {
			return netip.Addr{}, fmt.Errorf("release the old addresses of handle %s: %w", handle, err)
		}
	}
	alloc, err := r.cfg.IPAM.Assign(ctx, ipam.Request{HandleID: handle, Node: r.cfg.Node, Pools: e.Pools, IP: e.IP,
		Attrs: map[string]string{ipam.AttrNode: r.cfg.Node, ipam.AttrType: "vm", ipam.AttrDomain: e.Domain,
			ipam.AttrMAC: e.MAC, ipam.AttrNamespace: e.Namespace}})
	if err != nil {
		what := "an address"
		if e.IP.IsValid() {
			what = e.IP.String()
		}
		return netip.Addr{}, fmt.Errorf("assign %s to domain %s tap %s: %w", what, e.Domain, e.Tap, err)
	}
	r.log.Info("address assigned", zap.String("domain", e.Domain), zap.String("tap", e.Tap), zap.Stringer("ip", alloc.IP))
	return alloc.IP.Unmap(), nil
}

// buildWEP makes the WorkloadEndpoint of one tap.
func buildWEP(node string, e Endpoint, ip netip.Addr) *v1.WorkloadEndpoint {
	return &v1.WorkloadEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "WorkloadEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace, Labels: maps.Clone(e.Labels)},
		Spec: v1.WorkloadEndpointSpec{
			Orchestrator:  v1.OrchestratorLibvirt,
			Workload:      e.Domain,
			Node:          node,
			ContainerID:   e.UUID,
			InterfaceName: e.Tap,
			MAC:           e.MAC,
			IPNetworks:    []string{netip.PrefixFrom(ip, ip.BitLen()).String()},
			Profiles:      []string{ProfilePrefix + e.Namespace},
			Ports:         slices.Clone(e.Ports),
		},
	}
}

// write creates want, or updates have (compare-and-swap) when it differs in what the
// reconciler owns (labels and spec; annotations and the rest are kept).
func (r *Reconciler) write(ctx context.Context, want, have *v1.WorkloadEndpoint) error {
	for attempt := 0; attempt < writeAttempts; attempt++ {
		var err error
		if have == nil {
			_, err = datastore.Create(ctx, r.cfg.Store, want)
			if err == nil {
				r.log.Info("WorkloadEndpoint created", zap.String("namespace", want.Namespace), zap.String("name", want.Name))
				return nil
			}
		} else {
			if maps.Equal(have.Labels, want.Labels) && reflect.DeepEqual(have.Spec, want.Spec) {
				return nil
			}
			upd := have.DeepCopy()
			upd.Labels, upd.Spec = want.Labels, want.Spec
			_, err = datastore.Update(ctx, r.cfg.Store, upd)
			if err == nil {
				r.log.Info("WorkloadEndpoint updated", zap.String("namespace", want.Namespace), zap.String("name", want.Name))
				return nil
			}
		}
		if !errors.Is(err, datastore.ErrAlreadyExists) && !errors.Is(err, datastore.ErrConflict) && !errors.Is(err, datastore.ErrNotFound) {
			return fmt.Errorf("write WorkloadEndpoint %s/%s: %w", want.Namespace, want.Name, err)
		}
		have, err = datastore.Get[*v1.WorkloadEndpoint](ctx, r.cfg.Store, want.Namespace, want.Name)
		if errors.Is(err, datastore.ErrNotFound) {
			have = nil
		} else if err != nil {
			return fmt.Errorf("read WorkloadEndpoint %s/%s: %w", want.Namespace, want.Name, err)
		}
	}
	return fmt.Errorf("write WorkloadEndpoint %s/%s: gave up after %d lost races", want.Namespace, want.Name, writeAttempts)
}

// deleteWEP deletes w if it has not changed since it was read.
func (r *Reconciler) deleteWEP(ctx context.Context, w *v1.WorkloadEndpoint) error {
	err := r.cfg.Store.Delete(ctx, datastore.KindWorkloadEndpoint, w.Namespace, w.Name, datastore.DeleteOptions{ResourceVersion: w.ResourceVersion})
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("delete WorkloadEndpoint %s/%s: %w", w.Namespace, w.Name, err)
	}
	if err == nil {
		r.log.Info("WorkloadEndpoint deleted", zap.String("namespace", w.Namespace), zap.String("name", w.Name), zap.String("tap", w.Spec.InterfaceName))
	}
	return nil
}

// listWEPs lists the libvirt WorkloadEndpoints of this node.
func (r *Reconciler) listWEPs(ctx context.Context) ([]*v1.WorkloadEndpoint, error) {
	all, err := datastore.List[*v1.WorkloadEndpoint](ctx, r.cfg.Store, datastore.ListOptions{LabelSelector: LabelOrchestrator + "=libvirt"})
	if err != nil {
		return nil, fmt.Errorf("list WorkloadEndpoints: %w", err)
	}
	var out []*v1.WorkloadEndpoint
	for _, w := range all {
		if w.Spec.Orchestrator == v1.OrchestratorLibvirt && w.Spec.Node == r.cfg.Node {
			out = append(out, w)
		}
	}
	return out, nil
}

// endpointsOf maps namespace/name to the WorkloadEndpoints of one domain on this node,
// and lists those of other nodes (a live migration's other side).
func (r *Reconciler) endpointsOf(ctx context.Context, uuid string) (map[string]*v1.WorkloadEndpoint, []*v1.WorkloadEndpoint, error) {
	all, err := datastore.List[*v1.WorkloadEndpoint](ctx, r.cfg.Store, datastore.ListOptions{LabelSelector: LabelOrchestrator + "=libvirt"})
	if err != nil {
		return nil, nil, fmt.Errorf("list WorkloadEndpoints: %w", err)
	}
	mine := map[string]*v1.WorkloadEndpoint{}
	var others []*v1.WorkloadEndpoint
	for _, w := range all {
		switch {
		case w.Spec.Orchestrator != v1.OrchestratorLibvirt || w.Spec.ContainerID != uuid:
		case w.Spec.Node == r.cfg.Node:
			mine[w.Namespace+"/"+w.Name] = w
		default:
			others = append(others, w)
		}
	}
	return mine, others, nil
}

// runsElsewhere names a node other than this one with a WorkloadEndpoint of the domain.
func (r *Reconciler) runsElsewhere(ctx context.Context, uuid string) (string, error) {
	all, err := datastore.List[*v1.WorkloadEndpoint](ctx, r.cfg.Store, datastore.ListOptions{LabelSelector: LabelOrchestrator + "=libvirt"})
	if err != nil {
		return "", fmt.Errorf("list WorkloadEndpoints: %w", err)
	}
	for _, w := range all {
		if w.Spec.ContainerID == uuid && w.Spec.Node != r.cfg.Node {
			return w.Spec.Node, nil
		}
	}
	return "", nil
}

// vmHandles lists the IDs of every VM handle in IPAM.
func (r *Reconciler) vmHandles(ctx context.Context) ([]string, error) {
	hs, err := datastore.List[*v1.IPAMHandle](ctx, r.cfg.Store, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPAM handles: %w", err)
	}
	var out []string
	for _, h := range hs {
		if strings.HasPrefix(h.Spec.HandleID, "vm.") {
			out = append(out, h.Spec.HandleID)
		}
	}
	sort.Strings(out)
	return out, nil
}

// allocatedHere says whether this node allocated the handle's addresses.
func (r *Reconciler) allocatedHere(ctx context.Context, handle string) (bool, error) {
	ips, err := r.cfg.IPAM.AddressesOf(ctx, handle)
	if err != nil {
		return false, fmt.Errorf("read the addresses of handle %s: %w", handle, err)
	}
	for _, ip := range ips {
		info, err := r.cfg.IPAM.Lookup(ctx, ip)
		if err != nil {
			return false, fmt.Errorf("look up %s: %w", ip, err)
		}
		if info.Handle == handle && info.Attrs[ipam.AttrNode] == r.cfg.Node {
			return true, nil
		}
	}
	return false, nil
}

// handleUUID is the domain UUID of a VM handle ("vm.<uuid>.<mac>"), or "".
func handleUUID(h string) string {
	rest, ok := strings.CutPrefix(h, "vm.")
	if !ok {
		return ""
	}
	uuid, _, ok := strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	return uuid
}

func (r *Reconciler) setDHCP(uuid string, c DHCPConfig) error {
	r.mu.Lock()
	r.taps[c.Tap] = uuid
	r.mu.Unlock()
	if r.cfg.DHCP == nil {
		return nil
	}
	if err := r.cfg.DHCP.Set(c.Tap, c); err != nil {
		return fmt.Errorf("dhcp on %s: %w", c.Tap, err)
	}
	return nil
}

// removeDHCP stops serving the domain's taps that drop says to.
func (r *Reconciler) removeDHCP(uuid string, drop func(tap string) bool) {
	r.mu.Lock()
	var gone []string
	for tap, u := range r.taps {
		if u == uuid && drop(tap) {
			gone = append(gone, tap)
			delete(r.taps, tap)
		}
	}
	r.mu.Unlock()
	if r.cfg.DHCP == nil {
		return
	}
	for _, tap := range gone {
		r.cfg.DHCP.Remove(tap)
	}
}

func (r *Reconciler) setError(uuid, name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.domains[uuid]
	if st == nil {
		st = &DomainStatus{UUID: uuid, Name: name}
		r.domains[uuid] = st
	}
	if name != "" {
		st.Name = name
	}
	st.Error = ""
	if err != nil {
		st.Error = err.Error()
	}
}

// Domains reports the status of each domain, by name.
func (r *Reconciler) Domains() []DomainStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]DomainStatus, 0, len(r.domains))
	for _, st := range r.domains {
		c := *st
		c.Endpoints = slices.Clone(st.Endpoints)
		c.Problems = slices.Clone(st.Problems)
		if m := r.migrations[st.UUID]; m != nil {
			mc := *m
			c.Migration = &mc
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].UUID < out[j].UUID
	})
	return out
}
