package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
)

// Live migration hands a guest's endpoint from the source node to the destination
// when the guest stops running on the source for the last pages, not before (the
// guest still runs there) and not later (packets sent to the paused source are lost;
// packets routed to the destination's tap wait in its queue until the guest resumes):
//
//   - While the guest is paused on the destination (incoming) and runs on the source,
//     the destination's endpoint is on standby (spec.standby): felix polices the tap
//     but does not route to it; the source routes, advertises and holds the address.
//   - When the source pauses the guest for the last pages (libvirt: paused, reason
//     migration, with the outgoing migration job here), the source hands over: the address becomes the destination's
//     (ipam.Adopt, so BGP advertises the /32 from there), the destination's endpoint
//     leaves standby, with the guest's last packet through the source's tap in its
//     annotations, and the source's endpoint goes on standby (its route goes; the
//     source reaches the /32 via the destination).
//   - The rule is the same on both sides and stable: a node's endpoints of a domain
//     paused for a migration are on standby while another node's endpoint of it is
//     live. A guest that runs on a node takes its endpoints over there (another
//     node's live endpoints of it are deleted): a migration that failed after the
//     handover returns to the source that way, and a post-copy migration, whose
//     guest runs on the destination before the source lets go, too.
//   - The destination measures the blackout: from the guest's last packet through the
//     source's tap to its first through its own (felix's policy counters), reported
//     as tabby_vm_migration_blackout_seconds and in the domain's status; then it
//     removes the annotations.
const (
	// AnnotationMigratedFrom names the node the guest left, on the destination's
	// endpoint.
	AnnotationMigratedFrom = "tabby.dev/migrated-from"
	// AnnotationLastSent is when the guest last sent a packet through the source's
	// tap (RFC 3339, nanoseconds), on the destination's endpoint of the same MAC.
	AnnotationLastSent = "tabby.dev/migration-last-sent"
)

// Activity reads when a guest first and last sent a packet through its tap (felix's
// policy counters, since the tap's programs were attached; zero before the first).
type Activity interface {
	Sent(tap string) (first, last time.Time, err error)
}

// MigrationStatus is the last live migration of a domain to this node.
type MigrationStatus struct {
	From string `json:"from,omitempty"`
	// Resumed is when this node saw the guest run here and took over.
	Resumed time.Time `json:"resumed"`
	// LastSentThere and FirstSentHere are the guest's last packet through the source
	// node's tap and its first through this node's.
	LastSentThere time.Time `json:"lastSentThere,omitzero"`
	FirstSentHere time.Time `json:"firstSentHere,omitzero"`
	// BlackoutMillis is FirstSentHere - LastSentThere (the nodes' clocks must agree).
	BlackoutMillis *float64 `json:"blackoutMillis,omitempty"`
	// Error says why the blackout is not known (yet).
	Error string `json:"error,omitempty"`
}

// measureTimeout bounds the wait for a migrated guest's first packet and the source's
// report; a guest that sends nothing for that long gets no blackout figure.
const measureTimeout = time.Minute

type migrationMetrics struct {
	blackout prometheus.Histogram
	total    *prometheus.CounterVec
}

func newMigrationMetrics(reg prometheus.Registerer) (*migrationMetrics, error) {
	m := &migrationMetrics{
		blackout: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tabby_vm_migration_blackout_seconds",
			Help:    "Live migrations to this node: time from the guest's last packet through the source node's tap to its first through this node's.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_vm_migrations_total",
			Help: "Live migrations to this node that the agent took over; result measured or unmeasured (no blackout figure)."},
			[]string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.blackout, m.total} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register VM migration metrics: %w", err)
		}
	}
	return m, nil
}

// standby says whether this node's endpoints of d wait: d is paused for a migration
// and another node's endpoint of it is live (not on standby). That is the destination
// until the source hands over, and the source after it.
func standby(d Domain, others []*v1.WorkloadEndpoint) bool {
	if !d.MigrationPaused {
		return false
	}
	for _, w := range others {
		if !w.Spec.Standby {
			return true
		}
	}
	return false
}

// heldAddress is the address a standby endpoint shows: the one the handle holds (the
// source's), without adopting it; the metadata's fixed one if it names one.
func (r *Reconciler) heldAddress(ctx context.Context, e Endpoint) (netip.Addr, error) {
	if e.IP.IsValid() {
		return e.IP, nil
	}
	handle := ipam.VMHandle(e.UUID, e.MAC)
	held, err := r.cfg.IPAM.AddressesOf(ctx, handle)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read the addresses of handle %s: %w", handle, err)
	}
	if len(held) == 0 {
		return netip.Addr{}, fmt.Errorf("domain %s tap %s is migrating here but handle %s holds no address yet", e.Domain, e.Tap, handle)
	}
	return held[0].Unmap(), nil
}

// handOver runs on the source when its guest is paused for a migration while its
// endpoints here are live and another node's endpoints of the domain wait on standby:
// each of those (matched by MAC) gets the address (ipam.Adopt for its node), leaves
// standby and learns when the guest last sent through this node's tap. It returns
// whether it handed any over.
func (r *Reconciler) handOver(ctx context.Context, d Domain, mine map[string]*v1.WorkloadEndpoint, others []*v1.WorkloadEndpoint) (bool, error) {
	var errs []error
	handed := false
	for _, w := range mine {
		if w.Spec.Standby {
			continue
		}
		ann := map[string]string{AnnotationMigratedFrom: r.cfg.Node}
		if r.cfg.Activity != nil {
			if _, last, err := r.cfg.Activity.Sent(w.Spec.InterfaceName); err == nil && !last.IsZero() {
				ann[AnnotationLastSent] = last.UTC().Format(time.RFC3339Nano)
			} else {
				r.log.Info("no last packet of a migrating guest to report", zap.String("tap", w.Spec.InterfaceName), zap.Error(err))
			}
		}
		for _, o := range others {
			if !o.Spec.Standby || o.Spec.MAC != w.Spec.MAC {
				continue
			}
			handle := ipam.VMHandle(d.UUID, o.Spec.MAC)
			if _, err := r.cfg.IPAM.Adopt(ctx, handle, o.Spec.Node); err != nil {
				errs = append(errs, fmt.Errorf("hand the addresses of %s over to %s: %w", handle, o.Spec.Node, err))
				continue
			}
			if err := r.update(ctx, o, func(u *v1.WorkloadEndpoint) {
				u.Spec.Standby = false
				if u.Annotations == nil {
					u.Annotations = map[string]string{}
				}
				maps.Copy(u.Annotations, ann)
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			handed = true
			r.log.Info("the guest paused for the last pages of its migration: endpoint handed over", zap.String("domain", d.Name),
				zap.String("to", o.Spec.Node), zap.String("endpoint", o.Namespace+"/"+o.Name), zap.String("lastSent", ann[AnnotationLastSent]))
		}
	}
	return handed, errors.Join(errs...)
}

// update applies change to w (compare-and-swap, re-read and re-applied on a lost race;
// an endpoint that is gone is left alone).
func (r *Reconciler) update(ctx context.Context, w *v1.WorkloadEndpoint, change func(*v1.WorkloadEndpoint)) error {
	for attempt := 0; attempt < writeAttempts; attempt++ {
		upd := w.DeepCopy()
		change(upd)
		if reflect.DeepEqual(upd, w) {
			return nil
		}
		_, err := datastore.Update(ctx, r.cfg.Store, upd)
		if err == nil || errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, datastore.ErrConflict) {
			return fmt.Errorf("update WorkloadEndpoint %s/%s: %w", w.Namespace, w.Name, err)
		}
		if w, err = datastore.Get[*v1.WorkloadEndpoint](ctx, r.cfg.Store, upd.Namespace, upd.Name); errors.Is(err, datastore.ErrNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read WorkloadEndpoint %s/%s: %w", upd.Namespace, upd.Name, err)
		}
	}
	return fmt.Errorf("update WorkloadEndpoint %s/%s: gave up after %d lost races", w.Namespace, w.Name, writeAttempts)
}

// takeOver runs on the node where the guest runs: it deletes the other nodes' live
// endpoints of the domain, whose routes and advertisements then go.
func (r *Reconciler) takeOver(ctx context.Context, d Domain, others []*v1.WorkloadEndpoint) error {
	var errs []error
	for _, w := range others {
		if w.Spec.Standby {
			continue
		}
		r.log.Info("the guest runs here: taking its endpoint over from another node", zap.String("domain", d.Name),
			zap.String("from", w.Spec.Node), zap.String("endpoint", w.Namespace+"/"+w.Name))
		if err := r.deleteWEP(ctx, w); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// startMeasures runs on the node where the guest runs: an endpoint that carries a
// handover's annotations is measured, once per handover.
func (r *Reconciler) startMeasures(ctx context.Context, uuid string, weps []*v1.WorkloadEndpoint) {
	for _, w := range weps {
		from, ok := w.Annotations[AnnotationMigratedFrom]
		if !ok {
			continue
		}
		key := w.Namespace + "/" + w.Name + " " + from + " " + w.Annotations[AnnotationLastSent]
		r.mu.Lock()
		started := r.measuring[key]
		r.measuring[key] = true
		r.mu.Unlock()
		if !started {
			go r.measure(ctx, uuid, w, r.cfg.Now())
		}
	}
}

// measure waits (bounded by measureTimeout) for the guest's first packet through its
// tap here, records the blackout since its last one through the source's, and
// removes the handover's annotations.
func (r *Reconciler) measure(ctx context.Context, uuid string, w *v1.WorkloadEndpoint, resumed time.Time) {
	st := MigrationStatus{From: w.Annotations[AnnotationMigratedFrom], Resumed: resumed}
	var err error
	if st.LastSentThere, err = time.Parse(time.RFC3339Nano, w.Annotations[AnnotationLastSent]); err != nil {
		st.Error = "the source node reported no last packet (" + AnnotationLastSent + ")"
	} else if r.cfg.Activity == nil {
		st.Error = "no datapath counters here (policy is off)"
	}
	if st.Error == "" {
		st.Error = "waiting for the guest's first packet"
		r.setMigration(uuid, st)
		tctx, cancel := context.WithTimeout(ctx, measureTimeout)
		st.FirstSentHere = r.firstSent(tctx, w.Spec.InterfaceName)
		cancel()
		if st.FirstSentHere.IsZero() {
			st.Error = fmt.Sprintf("the guest sent nothing through %s within %v of resuming", w.Spec.InterfaceName, measureTimeout)
		} else {
			ms := float64(st.FirstSentHere.Sub(st.LastSentThere)) / float64(time.Millisecond)
			st.BlackoutMillis, st.Error = &ms, ""
		}
	}
	r.setMigration(uuid, st)
	if st.BlackoutMillis != nil {
		r.metrics.blackout.Observe(max(*st.BlackoutMillis, 0) / 1000)
		r.metrics.total.WithLabelValues("measured").Inc()
		r.log.Info("live migration blackout", zap.String("endpoint", w.Namespace+"/"+w.Name), zap.String("from", st.From),
			zap.Float64("blackoutMillis", *st.BlackoutMillis))
	} else {
		r.metrics.total.WithLabelValues("unmeasured").Inc()
		r.log.Info("live migration blackout not measured", zap.String("endpoint", w.Namespace+"/"+w.Name), zap.String("why", st.Error))
	}
	if ctx.Err() != nil {
		return
	}
	cur, err := datastore.Get[*v1.WorkloadEndpoint](ctx, r.cfg.Store, w.Namespace, w.Name)
	if err != nil {
		if !errors.Is(err, datastore.ErrNotFound) {
			r.log.Warn("remove the handover's annotations", zap.Error(err))
		}
		return
	}
	if err := r.update(ctx, cur, func(u *v1.WorkloadEndpoint) {
		delete(u.Annotations, AnnotationMigratedFrom)
		delete(u.Annotations, AnnotationLastSent)
	}); err != nil {
		r.log.Warn("remove the handover's annotations", zap.Error(err))
	}
}

// firstSent polls the tap's counters (every 10 ms) until the guest's first packet,
// or ctx ends (zero time).
func (r *Reconciler) firstSent(ctx context.Context, tap string) time.Time {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if first, _, err := r.cfg.Activity.Sent(tap); err == nil && !first.IsZero() {
			return first
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}

func (r *Reconciler) setMigration(uuid string, st MigrationStatus) {
	r.mu.Lock()
	r.migrations[uuid] = &st
	r.mu.Unlock()
}
