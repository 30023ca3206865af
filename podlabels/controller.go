package podlabels

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// Defaults and bounds of the controller.
const (
	// DefaultMaxAttempts bounds the compare-and-swap attempts of one label update.
	DefaultMaxAttempts = 5
	// writeTimeout bounds each datastore call of an update.
	writeTimeout = 10 * time.Second
	// Updates that failed are tried again after minRetryDelay, doubling to
	// maxRetryDelay while they keep failing.
	minRetryDelay = time.Second
	maxRetryDelay = 30 * time.Second
	// Backoff bounds for restarting the watches after they could not start.
	minRestartBackoff = 100 * time.Millisecond
	maxRestartBackoff = 10 * time.Second
)

// Labels returns the labels the WorkloadEndpoint of pod carries: the pod's own, then
// tabby.dev/namespace and tabby.dev/orchestrator, which win over a pod label with the
// same key. It is the rule tabby-cni applies at ADD (cni/wep.go); keep them equal.
func Labels(pod *corev1.Pod) map[string]string {
	out := make(map[string]string, len(pod.Labels)+2)
	for k, v := range pod.Labels {
		out[k] = v
	}
	out[cni.LabelNamespace] = pod.Namespace
	out[cni.LabelOrchestrator] = cni.OrchestratorK8s
	return out
}

// Config configures New.
type Config struct {
	// NodeName is this node: only its Pods and WorkloadEndpoints are followed.
	NodeName string
	// Store is the datastore (the Kubernetes API in tabby-node).
	Store datastore.Store
	// Logger; nil means none.
	Logger *zap.Logger
	// ResyncPeriod compares every local endpoint with its Pod again, from what the
	// watches hold (no extra reads); 0 means only at start and after the watches
	// restart. The watches themselves relist only after an error.
	ResyncPeriod time.Duration
	// MaxAttempts bounds the compare-and-swap attempts of one update (0: the default).
	MaxAttempts int
}

// Stats counts what the controller did, for tests and status.
type Stats struct {
	// Synced is true once both watches reported their initial list and the first
	// full resync ran.
	Synced bool
	// Updates is the number of label updates written; Conflicts the compare-and-swap
	// conflicts met (each followed by a re-read); Failures the updates given up on
	// for now (retried after 1 s, doubling to 30 s, and at every resync).
	Updates, Conflicts, Failures int
}

// Controller copies Pod labels to this node's pod WorkloadEndpoints. Run it once.
type Controller struct {
	cfg Config
	log *zap.Logger

	// Owned by Run's goroutine.
	pods   map[string]*corev1.Pod          // this node's Pods by namespace/name
	weps   map[string]*v1.WorkloadEndpoint // this node's pod endpoints by namespace/name
	failed map[string]bool                 // endpoint keys whose update failed
	retry  *time.Timer                     // armed while failed is not empty
	retryC <-chan time.Time                // retry's channel, nil when disarmed
	delay  time.Duration                   // of the next retry

	mu    sync.Mutex
	stats Stats
}

// New checks cfg and returns a controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("podlabels: no node name")
	}
	if cfg.Store == nil {
		return nil, errors.New("podlabels: no store")
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Controller{cfg: cfg, log: log}, nil
}

// Stats returns the counters so far.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Controller) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// Run follows Pods and WorkloadEndpoints until ctx ends, then returns nil. Watches that
// cannot start (datastore down, no permission) are retried with backoff and logged.
func (c *Controller) Run(ctx context.Context) error {
	backoff := minRestartBackoff
	for {
		started, err := c.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if started {
			backoff = minRestartBackoff
		}
		c.log.Warn("pod label watches stopped; restarting", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxRestartBackoff)
	}
}

// follow runs one pair of watches from a fresh list; started says whether both began.
func (c *Controller) follow(ctx context.Context) (started bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Only this node's Pods: the API server filters (spec.nodeName).
	var opts datastore.WatchOptions
	opts.FieldSelector = "spec.nodeName=" + c.cfg.NodeName
	pods, err := c.cfg.Store.Watch(wctx, datastore.KindPod, opts)
	if err != nil {
		return false, fmt.Errorf("watch pods: %w", err)
	}
	opts = datastore.WatchOptions{}
	opts.LabelSelector = cni.LabelOrchestrator + "=" + cni.OrchestratorK8s
	weps, err := c.cfg.Store.Watch(wctx, datastore.KindWorkloadEndpoint, opts)
	if err != nil {
		return false, fmt.Errorf("watch workload endpoints: %w", err)
	}
	c.pods, c.weps, c.failed = map[string]*corev1.Pod{}, map[string]*v1.WorkloadEndpoint{}, map[string]bool{}
	c.disarm()
	defer c.disarm()
	var podsSynced, wepsSynced bool
	var resync <-chan time.Time
	if c.cfg.ResyncPeriod > 0 {
		t := time.NewTicker(c.cfg.ResyncPeriod)
		defer t.Stop()
		resync = t.C
	}
	for {
		synced := podsSynced && wepsSynced
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case ev, ok := <-pods:
			if !ok {
				return true, errors.New("pod watch ended")
			}
			if ev.Type == datastore.Synced {
				podsSynced = true
				if wepsSynced {
					c.resyncAll(ctx)
				}
				continue
			}
			if key, ok := c.podEvent(ev); ok && synced {
				c.syncPod(ctx, key)
			}
		case ev, ok := <-weps:
			if !ok {
				return true, errors.New("workload endpoint watch ended")
			}
			if ev.Type == datastore.Synced {
				wepsSynced = true
				if podsSynced {
					c.resyncAll(ctx)
				}
				continue
			}
			if key, ok := c.wepEvent(ev); ok && synced {
				c.syncWEP(ctx, key)
			}
		case <-resync:
			if synced {
				c.resyncAll(ctx)
			}
		case <-c.retryC:
			// Those failing again are retried after twice the delay.
			c.retryC, c.delay = nil, min(2*c.delay, maxRetryDelay)
			keys := slices.Sorted(maps.Keys(c.failed))
			c.failed = map[string]bool{}
			for _, k := range keys {
				c.syncWEP(ctx, k)
			}
			if len(c.failed) == 0 {
				c.delay = minRetryDelay
			}
		}
	}
}

func key(namespace, name string) string { return namespace + "/" + name }

// podEvent records a Pod event; ok is false when it is not one of this node's pods
// now (it is forgotten then: its endpoints are left alone).
func (c *Controller) podEvent(ev datastore.Event) (string, bool) {
	pod, isPod := ev.Object.(*corev1.Pod)
	if !isPod {
		return "", false
	}
	k := key(pod.Namespace, pod.Name)
	if ev.Type == datastore.Deleted || pod.Spec.NodeName != c.cfg.NodeName {
		delete(c.pods, k)
		return k, false
	}
	c.pods[k] = pod
	return k, true
}

// local says whether w is a pod endpoint of this node.
func (c *Controller) local(w *v1.WorkloadEndpoint) bool {
	return w.Spec.Node == c.cfg.NodeName && w.Spec.Orchestrator == v1.OrchestratorPod
}

// wepEvent records a WorkloadEndpoint event; ok is false when it is not local now.
func (c *Controller) wepEvent(ev datastore.Event) (string, bool) {
	w, isWEP := ev.Object.(*v1.WorkloadEndpoint)
	if !isWEP {
		return "", false
	}
	k := key(w.Namespace, w.Name)
	if ev.Type == datastore.Deleted || !c.local(w) {
		delete(c.weps, k)
		delete(c.failed, k)
		return k, false
	}
	c.weps[k] = w
	return k, true
}

// resyncAll compares every local endpoint with its Pod.
func (c *Controller) resyncAll(ctx context.Context) {
	for _, k := range slices.Sorted(maps.Keys(c.weps)) {
		c.syncWEP(ctx, k)
	}
	c.count(func(s *Stats) { s.Synced = true })
}

// syncPod brings the endpoints of the Pod at podKey up to date.
func (c *Controller) syncPod(ctx context.Context, podKey string) {
	var keys []string
	for k, w := range c.weps {
		if key(w.Namespace, w.Spec.Workload) == podKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		c.syncWEP(ctx, k)
	}
}

// syncWEP brings one endpoint's labels up to date with its Pod, if it has one here.
func (c *Controller) syncWEP(ctx context.Context, k string) {
	w, ok := c.weps[k]
	if !ok {
		return
	}
	pod, ok := c.pods[key(w.Namespace, w.Spec.Workload)]
	if !ok {
		return // the pod is gone or not ours: CNI DEL owns the endpoint
	}
	want := Labels(pod)
	if maps.Equal(w.Labels, want) {
		return
	}
	if err := c.update(ctx, k, w, want); err != nil {
		if ctx.Err() != nil {
			return
		}
		c.count(func(s *Stats) { s.Failures++ })
		c.log.Warn("cannot update the labels of a workload endpoint; retrying", zap.String("endpoint", k), zap.Error(err))
		c.failed[k] = true
		c.arm()
	}
}

// update writes want as w's labels, compare-and-swap; on a conflict it re-reads the
// endpoint and tries again while it is still this pod's, local, and different.
func (c *Controller) update(ctx context.Context, k string, w *v1.WorkloadEndpoint, want map[string]string) error {
	pod := w.Spec.Workload
	for attempt := 1; ; attempt++ {
		next := w.DeepCopy()
		next.Labels = want
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		got, err := datastore.Update(wctx, c.cfg.Store, next)
		cancel()
		switch {
		case err == nil:
			c.weps[k] = got
			c.count(func(s *Stats) { s.Updates++ })
			c.log.Info("workload endpoint labels follow its pod", zap.String("endpoint", k),
				zap.Any("labels", want), zap.Int("attempt", attempt))
			return nil
		case errors.Is(err, datastore.ErrNotFound):
			return nil // deleted meanwhile: the watch reports it
		case !errors.Is(err, datastore.ErrConflict):
			return fmt.Errorf("update labels of workload endpoint %s: %w", k, err)
		}
		c.count(func(s *Stats) { s.Conflicts++ })
		if attempt >= c.cfg.MaxAttempts {
			return fmt.Errorf("update labels of workload endpoint %s: %d attempts: %w", k, attempt, err)
		}
		wctx, cancel = context.WithTimeout(ctx, writeTimeout)
		fresh, err := datastore.Get[*v1.WorkloadEndpoint](wctx, c.cfg.Store, w.Namespace, w.Name)
		cancel()
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("re-read workload endpoint %s after a conflict: %w", k, err)
		}
		if !c.local(fresh) || fresh.Spec.Workload != pod {
			return nil // no longer this pod's local endpoint: the watch reports it
		}
		c.weps[k] = fresh
		if maps.Equal(fresh.Labels, want) {
			return nil
		}
		w = fresh
	}
}

// arm schedules a retry of the failed updates, unless one is scheduled.
func (c *Controller) arm() {
	if c.retryC != nil {
		return
	}
	c.retry = time.NewTimer(c.delay)
	c.retryC = c.retry.C
}

// disarm cancels a scheduled retry and resets the delay.
func (c *Controller) disarm() {
	if c.retry != nil {
		c.retry.Stop()
	}
	c.retry, c.retryC, c.delay = nil, nil, minRetryDelay
}
