package felix

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tabbynet/tabby/felix/calc"
	"github.com/tabbynet/tabby/felix/dataplane"
	"go.uber.org/zap"
)

// Bounds of the delay before an apply that failed is retried.
const (
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
)

// loop is the apply goroutine's state: the reconcilers are used from it only.
type loop struct {
	f   *Felix
	rt  *dataplane.RouteTable
	sys *dataplane.Sysctls
	enf *enforcer // nil unless Config.Policy

	syncedOnce bool          // the first apply after every watch synced is done
	retry      time.Duration // backoff after an apply with errors
	again      time.Duration // when the next apply is due without any event (0: none)
}

// batch is what the apply goroutine takes from the inputs under f.mu.
type batch struct {
	changes   calc.Changes
	links     int
	full      bool
	synced    bool // every datastore watch has synced
	learned   bool // the learned routes were given at least once
	endpoints []endpointView
	watchErrs []string
	policy    policyBatch
}

// endpointView is an endpoint as the status needs it, taken under f.mu.
type endpointView struct {
	ep     *calc.Endpoint
	owners []string // owner of each of ep.IPs' routes
}

func (l *loop) run(ctx context.Context) {
	f := l.f
	resync := time.NewTicker(f.cfg.ResyncInterval)
	defer resync.Stop()
	var retryC <-chan time.Time
	full := true // adopt what the kernel has at start
	for {
		l.apply(full)
		full = false
		retryC = nil
		if l.again > 0 {
			retryC = time.After(l.again)
		}
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-retryC:
		case <-resync.C:
			full = true
		}
	}
}

// take collects everything that changed since the last run.
func (l *loop) take(full bool) batch {
	f := l.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.learnedDirty {
		lr := make([]calc.LearnedRoute, len(f.learned))
		for i, r := range f.learned {
			lr[i] = calc.LearnedRoute(r)
		}
		f.graph.SetLearned(lr)
		f.learned, f.learnedDirty = nil, false
	}
	if f.learnedDelta != nil && f.learnedSeen {
		f.graph.UpdateLearned(f.learnedDelta)
		f.learnedDelta = nil
	}
	b := batch{changes: f.graph.TakeChanges(), full: full || f.needResync, synced: true, learned: f.learnedSeen}
	f.needResync = false
	for _, u := range f.linkQ {
		l.rt.OnLinkUpdate(u)
		if a := u.Attrs(); a != nil {
			l.sys.OnLink(a.Name)
		}
	}
	for _, e := range f.routeQ {
		l.rt.OnRouteEvent(e)
	}
	b.links = len(f.linkQ)
	if l.enf != nil {
		b.policy = f.takePolicy(b.full || b.links > 0 || l.enf.needs)
	}
	f.linkQ, f.routeQ = nil, nil
	for _, name := range watched {
		b.synced = b.synced && f.synced[name]
		if msg := f.watchErrs[name]; msg != "" {
			b.watchErrs = append(b.watchErrs, msg)
		}
	}
	eps := f.graph.Endpoints()
	b.endpoints = make([]endpointView, len(eps))
	for i, ep := range eps {
		v := endpointView{ep: ep, owners: make([]string, len(ep.IPs))}
		for j, ip := range ep.IPs {
			v.owners[j] = f.graph.Owner(netip.PrefixFrom(ip, ip.BitLen()))
		}
		b.endpoints[i] = v
	}
	return b
}

// apply runs the reconcilers once.
func (l *loop) apply(full bool) {
	f := l.f
	b := l.take(full)
	for p, r := range b.changes.Routes {
		if r == nil {
			l.rt.Delete(p)
		} else {
			l.rt.Set(p, *r)
		}
	}
	for name, want := range b.changes.Interfaces {
		l.sys.Set(name, want)
	}
	firstSynced := b.synced && !l.syncedOnce
	if firstSynced {
		b.full = true // compare everything now that deletes are safe
	}
	if b.full {
		l.rt.QueueResync()
		l.sys.QueueResync()
	}
	l.rt.SetAllowDeletes(b.synced, b.learned)

	start := time.Now()
	res := l.rt.Apply()
	_, sysPending, sysErr := l.sys.Apply()
	var polErr error
	if l.enf != nil {
		polErr = errors.Join(l.enf.apply(b.policy, b.full, b.links)...)
	}
	took := time.Since(start)
	f.m.applySeconds.Observe(took.Seconds())
	if res.Resynced {
		f.m.resyncs.Inc()
	}
	errs := append([]string(nil), b.watchErrs...)
	if res.Err != nil {
		errs = append(errs, res.Err.Error())
	}
	if sysErr != nil {
		errs = append(errs, sysErr.Error())
	}
	if polErr != nil {
		errs = append(errs, polErr.Error())
	}
	if res.Err != nil || sysErr != nil || polErr != nil {
		f.m.applyErrors.Inc()
		l.retry = min(max(l.retry*2, minRetry), maxRetry)
		f.log.Warn("apply incomplete; will retry", zap.Error(errors.Join(res.Err, sysErr, polErr)),
			zap.Duration("retry", l.retry))
	} else {
		l.retry = 0
	}
	l.again = l.retry
	if res.RetryIn > 0 && (l.again == 0 || res.RetryIn < l.again) {
		l.again = res.RetryIn
	}
	if res.Written > 0 || res.Resynced || res.Err != nil {
		f.log.Debug("applied", zap.Int("routesWritten", res.Written), zap.Int("pending", res.Pending+sysPending),
			zap.Int("failed", res.Failed), zap.Bool("resync", res.Resynced), zap.Duration("took", took))
	}
	counts := l.rt.Counts()
	for k, n := range counts {
		f.m.routes.WithLabelValues(k.String()).Set(float64(n))
	}
	f.m.endpoints.Set(float64(len(b.endpoints)))
	if firstSynced {
		l.syncedOnce = true
		f.log.Info("dataplane in sync with the datastore", zap.Int("endpoints", len(b.endpoints)),
			zap.Int("localRoutes", counts[dataplane.KindLocal]), zap.Int("blackholes", counts[dataplane.KindBlackhole]),
			zap.Int("learnedRoutes", counts[dataplane.KindLearned]))
	}
	var ps *PolicyStatus
	if l.enf != nil {
		ps = l.enf.report()
	}
	f.publish(Status{
		Policy:    ps,
		InSync:    l.syncedOnce && len(errs) == 0,
		LastApply: time.Now(),
		LastError: strings.Join(errs, "; "),
		Routes: RouteCounts{Local: counts[dataplane.KindLocal], Blackhole: counts[dataplane.KindBlackhole],
			Learned: counts[dataplane.KindLearned]},
	}, l.endpointStatus(b.endpoints), l.syncedOnce)
}

// endpointStatus says, for each endpoint, whether its routes and sysctls are in place.
func (l *loop) endpointStatus(views []endpointView) []EndpointStatus {
	out := make([]EndpointStatus, len(views))
	for i, v := range views {
		ep := v.ep
		st := EndpointStatus{Namespace: ep.Namespace, Name: ep.Name, Workload: ep.Workload, Interface: ep.Interface,
			IPs: make([]string, len(ep.IPs))}
		msgs := append([]string(nil), ep.Problems...)
		if ep.InterfaceOK {
			if ok, why := l.sys.Programmed(ep.Interface); !ok {
				msgs = append(msgs, why)
			}
		}
		for j, ip := range ep.IPs {
			st.IPs[j] = ip.String()
			if !ep.InterfaceOK {
				continue
			}
			if owner := v.owners[j]; owner != ep.Key() {
				msgs = append(msgs, "address "+ip.String()+" is also claimed by "+owner+", whose interface gets the route")
				continue
			}
			if ok, why := l.rt.Programmed(netip.PrefixFrom(ip, ip.BitLen())); !ok {
				msgs = append(msgs, "route to "+ip.String()+": "+why)
			}
		}
		st.Programmed = len(msgs) == 0
		if l.enf != nil {
			st.PolicyProgrammed, st.PolicyMessage = l.enf.endpointPolicy(ep.Key())
		}
		st.Message = strings.Join(msgs, "; ")
		out[i] = st
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}
