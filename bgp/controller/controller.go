package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"go.uber.org/zap"
)

// Config configures a Controller.
type Config struct {
	// NodeName is this node. Required.
	NodeName string
	// Store is the datastore to watch, and where the NodeStatus goes. Required.
	Store datastore.Store
	// NewSpeaker makes the node's speaker (e.g. bgp.NewGoBGP). Required. It is called
	// again, after stopping the old speaker, when the router ID, AS or listen port
	// changes: a speaker starts only once.
	NewSpeaker func() bgp.Speaker
	// OnLearned receives the whole learned set (see Learned). Required.
	OnLearned func([]felix.LearnedRoute)
	// OnLearnedDelta, when set, receives the changes after the first hand-off instead
	// (felix's UpdateLearnedRoutes; see LearnedOptions.OnDelta).
	OnLearnedDelta func([]felix.LearnedRoute, []netip.Prefix)
	// Base carries the speaker's Global fields the datastore does not give
	// (LocalRestarting after a graceful stop, SelectionDeferral, ListenAddresses).
	Base bgp.Global
	// StopGraceful: on exit, stop the speaker without NOTIFICATIONs, so graceful-restart
	// peers keep our routes until we are back (with Base.LocalRestarting).
	StopGraceful bool
	// SecretNamespace holds the Secrets BGP passwords name (default tabby-system).
	SecretNamespace string
	// CalcDelay coalesces datastore changes: a change after a quiet spell is
	// calculated at once, then at most one calculation per CalcDelay (default 10ms).
	CalcDelay time.Duration
	// Learned tunes the learned-route hand-off (OnPeer is set by the controller).
	Learned LearnedOptions
	// Status tunes the NodeStatus writer.
	Status StatusOptions
	// Logger (default none).
	Logger *zap.Logger
}

// Controller runs BGP for one node: it watches the datastore, computes the Desired
// state, reconciles the speaker, hands learned routes on and writes the NodeStatus.
type Controller struct {
	cfg Config
	log *zap.Logger
	in  *inputs

	mu       sync.Mutex
	sp       bgp.Speaker
	desired  *Desired
	applyErr string
}

// New checks cfg and returns a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("bgp controller: no node name")
	case cfg.Store == nil:
		return nil, errors.New("bgp controller: no datastore")
	case cfg.NewSpeaker == nil:
		return nil, errors.New("bgp controller: no speaker")
	case cfg.OnLearned == nil:
		return nil, errors.New("bgp controller: no learned-route callback")
	}
	if cfg.SecretNamespace == "" {
		cfg.SecretNamespace = DefaultSecretNamespace
	}
	if cfg.CalcDelay <= 0 {
		cfg.CalcDelay = 10 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Learned.Logger == nil {
		cfg.Learned.Logger = log
	}
	if cfg.Status.Logger == nil {
		cfg.Status.Logger = log
	}
	return &Controller{cfg: cfg, log: log, in: newInputs(log)}, nil
}

// Desired is the last computed state (nil before the datastore synced).
func (c *Controller) Desired() *Desired {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired
}

// Problems lists what the last calculation skipped, the datastore watches' errors and
// the last failure to apply.
func (c *Controller) Problems() []Problem {
	_, probs := c.in.snapshot(c.cfg.NodeName, c.cfg.SecretNamespace)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.desired != nil {
		probs = append(slices.Clone(c.desired.Problems), probs...)
	}
	if c.applyErr != "" {
		probs = append(probs, Problem{Object: "speaker", Reason: c.applyErr})
	}
	return probs
}

// Peers reports the current speaker's sessions (none before it started).
func (c *Controller) Peers(ctx context.Context) ([]bgp.PeerState, error) {
	c.mu.Lock()
	sp := c.sp
	c.mu.Unlock()
	if sp == nil {
		return nil, nil
	}
	ps, err := sp.Peers(ctx)
	if errors.Is(err, bgp.ErrNotStarted) {
		return nil, nil
	}
	return ps, err
}

// Run runs until ctx ends, then stops the speaker (gracefully if StopGraceful) and
// returns nil. Nothing is applied before every datastore watch has synced.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, k := range watchedKinds {
		opts := datastore.WatchOptions{}
		if k.Name == datastore.KindSecret.Name {
			opts.Namespace = c.cfg.SecretNamespace
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.in.watch(wctx, c.cfg.Store, k, opts)
		}()
	}
	status := NewStatusWriter(c.cfg.Store, c.cfg.NodeName, c.Peers, c.cfg.Status)
	wg.Add(1)
	go func() {
		defer wg.Done()
		status.Run(wctx)
	}()
	lopts := c.cfg.Learned
	lopts.OnPeer = func(bgp.Event) { status.Kick() }
	if lopts.OnDelta == nil {
		lopts.OnDelta = c.cfg.OnLearnedDelta
	}
	if c.cfg.Base.LocalRestarting && lopts.InitialSyncTimeout == 0 {
		lopts.InitialSyncTimeout = DefaultRestartSyncTimeout
	}

	var (
		rec     *Reconciler
		learned *Learned
		stopL   context.CancelFunc
		lwg     sync.WaitGroup
		retry   <-chan time.Time
		backoff = 100 * time.Millisecond
	)
	newSpeaker := func() {
		sp := c.cfg.NewSpeaker()
		rec = NewReconciler(sp, c.cfg.Base, c.log)
		learned = NewLearned(c.cfg.OnLearned, lopts)
		var lctx context.Context
		lctx, stopL = context.WithCancel(wctx)
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			learned.Run(lctx, sp.Watch())
		}()
		c.mu.Lock()
		c.sp = sp
		c.mu.Unlock()
	}
	stopSpeaker := func(graceful bool) {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer scancel()
		if rec.Started() {
			if err := c.sp.Stop(sctx, graceful); err != nil {
				c.log.Warn("stop bgp speaker", zap.Error(err))
			}
		}
		stopL()
		lwg.Wait()
	}
	newSpeaker()
	defer func() { stopSpeaker(c.cfg.StopGraceful) }()

	// Leading edge: a change after a quiet spell is calculated at once; within a burst,
	// at most one calculation per CalcDelay.
	var (
		calc     <-chan time.Time
		lastCalc time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.in.changed:
			if calc != nil || !c.in.allSynced() {
				continue
			}
			if wait := c.cfg.CalcDelay - time.Since(lastCalc); wait > 0 {
				calc = time.After(wait)
				continue
			}
		case <-calc:
			calc = nil
		case <-retry:
			retry = nil
		}
		lastCalc = time.Now()
		in, _ := c.in.snapshot(c.cfg.NodeName, c.cfg.SecretNamespace)
		d := Calc(in)
		c.log.Debug("bgp desired state", zap.Stringer("desired", d))
		c.logProblems(d)
		c.mu.Lock()
		c.desired = d
		c.mu.Unlock()
		learned.SetDesired(d)
		err := rec.Apply(ctx, d)
		if errors.Is(err, ErrRestartNeeded) {
			c.log.Info("bgp identity changed; restarting the speaker", zap.Error(err))
			stopSpeaker(false)
			newSpeaker()
			learned.SetDesired(d)
			err = rec.Apply(ctx, d)
		}
		c.mu.Lock()
		c.applyErr = ""
		if err != nil {
			c.applyErr = err.Error()
		}
		c.mu.Unlock()
		status.Kick()
		if err != nil && ctx.Err() == nil {
			c.log.Warn("bgp apply failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			retry = time.After(backoff)
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// logProblems logs the problems that are new since the last calculation.
func (c *Controller) logProblems(d *Desired) {
	c.mu.Lock()
	var old []Problem
	if c.desired != nil {
		old = c.desired.Problems
	}
	c.mu.Unlock()
	for _, p := range d.Problems {
		if !slices.Contains(old, p) {
			c.log.Warn("bgp configuration problem", zap.String("object", p.Object), zap.String("reason", p.Reason))
		}
	}
}
