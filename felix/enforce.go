package felix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/policy"
	"github.com/tabbynet/tabby/felix/policymaps"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// DefaultBPFPinDir is Config.BPFPinDir's default.
const DefaultBPFPinDir = ebpf.DefaultPinDir

// policyKinds are the kinds watched, besides WorkloadEndpoints, when Config.Policy is
// set; each must sync before felix writes the policy maps.
var policyKinds = []struct {
	name string
	kind datastore.Kind
}{
	{"K8sNetworkPolicy", datastore.KindK8sNetworkPolicy},
	{"NetworkPolicy", datastore.KindNetworkPolicy},
	{"GlobalNetworkPolicy", datastore.KindGlobalNetworkPolicy},
	{"NetworkSet", datastore.KindNetworkSet},
	{"GlobalNetworkSet", datastore.KindGlobalNetworkSet},
	{"Namespace", datastore.KindNamespace},
}

// policyInputs is what policy is compiled from; guarded by f.mu.
type policyInputs struct {
	// objs holds each watched kind's objects (and the WorkloadEndpoints) by
	// namespace/name.
	objs  map[string]map[string]datastore.Object
	dirty bool // something policy-relevant changed since the last take
}

func newPolicyInputs() *policyInputs {
	p := &policyInputs{objs: map[string]map[string]datastore.Object{"WorkloadEndpoint": {}}, dirty: true}
	for _, k := range policyKinds {
		p.objs[k.name] = map[string]datastore.Object{}
	}
	return p
}

func objKey(o datastore.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// replace and update record a watch's objects (under f.mu; no I/O).
func (p *policyInputs) replace(name string, objs []datastore.Object) {
	m := make(map[string]datastore.Object, len(objs))
	for _, o := range objs {
		m[objKey(o)] = o
	}
	p.objs[name], p.dirty = m, true
}

func (p *policyInputs) update(name string, ev datastore.Event) {
	if ev.Type == datastore.Deleted {
		delete(p.objs[name], objKey(ev.Object))
	} else {
		p.objs[name][objKey(ev.Object)] = ev.Object
	}
	p.dirty = true
}

// localEndpoint is a WorkloadEndpoint of this node, as the enforcer needs it.
type localEndpoint struct {
	key   string // WorkloadEndpoint namespace/name, also its policy.Endpoint key
	iface string
	ips   []netip.Addr
	mac   net.HardwareAddr
}

// policyBatch is what the apply goroutine takes for policy under f.mu.
type policyBatch struct {
	synced    bool
	changed   bool
	in        *policy.Input  // when changed
	sources   []PolicySource // the objects in.Policies etc. came from, when changed
	local     []localEndpoint
	watchErrs []string
	// hasLocal: local was built for this batch; otherwise the enforcer's last list
	// stands (an apply made full after the take, e.g. the first synced one after a
	// start or restart, must not read the unbuilt list as "no local endpoints").
	hasLocal bool
}

// startPolicyWatches starts the watches of the policy kinds (Config.Policy).
func (f *Felix) startPolicyWatches(ctx context.Context, wg *sync.WaitGroup) {
	for _, k := range policyKinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.watch(ctx, k.name, k.kind, datastore.WatchOptions{}, func(objs []datastore.Object) {
				f.pol.replace(k.name, objs)
			}, func(ev datastore.Event) {
				f.pol.update(k.name, ev)
			})
		}()
	}
}

// takePolicy runs under f.mu: it builds the compiler's input when it changed, and the
// local endpoints when it changed or redo is set.
func (f *Felix) takePolicy(redo bool) policyBatch {
	p := f.pol
	b := policyBatch{synced: f.synced["WorkloadEndpoint"], changed: p.dirty}
	for _, k := range policyKinds {
		b.synced = b.synced && f.synced[k.name]
		if msg := f.watchErrs[k.name]; msg != "" {
			b.watchErrs = append(b.watchErrs, msg)
		}
	}
	if !b.synced || (!b.changed && !redo) {
		return b
	}
	p.dirty = false
	b.hasLocal = true
	in := &policy.Input{Namespaces: map[string]map[string]string{}}
	for _, o := range p.objs["WorkloadEndpoint"] {
		w, ok := o.(*v1.WorkloadEndpoint)
		if !ok {
			continue
		}
		ep, err := policy.EndpointFromWorkload(w)
		if err != nil {
			continue // the route status reports the bad field
		}
		ep.Name = w.Name // unique in the namespace, unlike the workload name
		if b.changed {
			in.Endpoints = append(in.Endpoints, ep)
		}
		if w.Spec.Node != f.cfg.NodeName || w.Spec.InterfaceName == "" {
			continue
		}
		le := localEndpoint{key: ep.Key(), iface: w.Spec.InterfaceName, ips: ep.IPs}
		if mac, err := net.ParseMAC(w.Spec.MAC); err == nil && len(mac) == 6 {
			le.mac = mac
		}
		b.local = append(b.local, le)
	}
	sort.Slice(b.local, func(i, j int) bool { return b.local[i].key < b.local[j].key })
	if !b.changed {
		return b
	}
	for _, k := range policyKinds {
		if k.name == "Namespace" {
			continue
		}
		for _, o := range p.objs[k.name] {
			b.sources = append(b.sources, PolicySource{Kind: k.name, Namespace: o.GetNamespace(),
				Name: o.GetName(), ResourceVersion: o.GetResourceVersion()})
		}
	}
	sortSources(b.sources)
	for _, o := range p.objs["K8sNetworkPolicy"] {
		if np, ok := o.(*networkingv1.NetworkPolicy); ok {
			in.KubePolicies = append(in.KubePolicies, *np)
		}
	}
	for _, o := range p.objs["NetworkPolicy"] {
		if np, ok := o.(*v1.NetworkPolicy); ok {
			in.Policies = append(in.Policies, *np)
		}
	}
	for _, o := range p.objs["GlobalNetworkPolicy"] {
		if np, ok := o.(*v1.GlobalNetworkPolicy); ok {
			in.GlobalPolicies = append(in.GlobalPolicies, *np)
		}
	}
	for _, o := range p.objs["NetworkSet"] {
		if s, ok := o.(*v1.NetworkSet); ok {
			in.NetworkSets = append(in.NetworkSets, *s)
		}
	}
	for _, o := range p.objs["GlobalNetworkSet"] {
		if s, ok := o.(*v1.GlobalNetworkSet); ok {
			in.GlobalNetworkSets = append(in.GlobalNetworkSets, *s)
		}
	}
	for _, o := range p.objs["Namespace"] {
		if ns, ok := o.(*corev1.Namespace); ok {
			in.Namespaces[ns.Name] = ns.Labels
		}
	}
	b.in = in
	return b
}

// enforcer is the apply goroutine's policy state (Config.Policy).
type enforcer struct {
	f    *Felix
	nst  *dataplane.NSThread // runs Attach/Detach in the node's namespace (nil: this one)
	dp   *ebpf.Datapath
	w    *policymaps.Writer
	comp *policy.Compiled
	ids  map[string]uint32 // endpoint key -> compiled id
	cErr error             // the last compile's error (the last good output is kept)
	// compiled lists the objects e.comp was compiled from; written the same once the
	// maps hold e.comp.
	compiled, written []PolicySource
	writeErr          error // the last map write's error
	needs             bool  // redo the maps and attachments on the next apply
	// attached maps each ifindex the programs are on to its interface name.
	attached map[int]string
	// status maps each local endpoint key to "" (enforced) or why not.
	status map[string]string
	// local is the last batch's list of local endpoints that was built (hasLocal).
	local []localEndpoint
	// renumbered lists datapath rule ids that name another rule since the last
	// compile: their counters are reset once the maps hold the new policy.
	renumbered []uint32
}

// newEnforcer prepares the policy enforcement, and registers its metrics (the
// datapath's per-endpoint and per-rule counters, read when scraped).
func newEnforcer(f *Felix, nst *dataplane.NSThread) *enforcer {
	if err := f.m.registerPolicy(); err != nil {
		f.log.Warn("no policy metrics", zap.Error(err))
	}
	return &enforcer{f: f, nst: nst, needs: true, attached: map[int]string{}, status: map[string]string{}}
}

// close releases the datapath's handles; pins, maps and attachments stay.
func (e *enforcer) close() {
	e.f.m.policy.set(nil)
	if e.dp != nil {
		_ = e.dp.Close()
	}
}

// publishCounters gives the metrics collector the datapath and the names of its
// counters' keys (the compiled rules, the attached interfaces).
func (e *enforcer) publishCounters() {
	if e.dp == nil || e.comp == nil {
		return
	}
	eps := make(map[int]string, len(e.attached))
	for idx, key := range e.attached {
		eps[idx] = key
	}
	e.f.m.policy.set(&policyCounters{dp: e.dp, comp: e.comp, eps: eps})
}

// renumberedRules lists the datapath rule ids whose rule differs between old and c
// (rule ids are positions in the compiled rule list).
func renumberedRules(old, c *policy.Compiled) []uint32 {
	if old == nil {
		return nil
	}
	var ids []uint32
	for i, r := range old.Rules {
		if i >= len(c.Rules) || c.Rules[i] != r {
			ids = append(ids, uint32(i)+1)
		}
	}
	return ids
}

// apply compiles (when the input changed), writes the maps and attaches the programs.
// It returns the errors to report; the caller retries after an error.
func (e *enforcer) apply(b policyBatch, full bool, links int) []error {
	defer e.publishExplain(b) // explain.go: a snapshot for ExplainPolicy and SubscribeDrops
	defer e.publishCounters()
	errs := make([]error, 0, len(b.watchErrs))
	for _, m := range b.watchErrs {
		errs = append(errs, errors.New(m))
	}
	if !b.synced {
		return errs
	}
	if b.hasLocal {
		e.local = b.local
	}
	if b.in != nil {
		c, err := policy.Compile(b.in)
		e.cErr = err
		if err != nil {
			e.f.log.Warn("policy does not compile; keeping the last good one", zap.Error(err))
		} else {
			e.renumbered = append(e.renumbered, renumberedRules(e.comp, c)...)
			e.comp, e.compiled = c, b.sources
			e.ids = make(map[string]uint32, len(c.Endpoints))
			for _, t := range c.Endpoints {
				e.ids[t.Key] = t.ID
			}
		}
		e.needs = true
	}
	if e.cErr != nil {
		errs = append(errs, fmt.Errorf("compile policy: %w", e.cErr))
	}
	if (!e.needs && !full && links == 0) || e.comp == nil {
		return errs
	}
	if e.dp == nil {
		dp, err := ebpf.Load(ebpf.Options{PinDir: e.f.cfg.BPFPinDir, ReplaceIncompatible: true})
		if err != nil {
			return append(errs, fmt.Errorf("load the policy datapath: %w", err))
		}
		if len(dp.Replaced) > 0 {
			// An upgrade changed their layout: the policy maps are written again below,
			// before the new programs replace the old ones; tracked flows start over.
			e.f.log.Warn("pinned BPF maps had an older layout; replaced them",
				zap.Strings("maps", dp.Replaced), zap.String("pinDir", e.f.cfg.BPFPinDir))
		}
		e.dp, e.w = dp, policymaps.New(dp, e.f.log.Named("policymaps"))
	}
	status := make(map[string]string, len(e.local))
	var eps []policymaps.Endpoint
	want := map[int]string{}
	for _, le := range e.local {
		id, ok := e.ids[le.key]
		if !ok {
			status[le.key] = "not in the compiled policy"
			continue
		}
		l, err := e.f.h.LinkByName(le.iface)
		if err != nil {
			status[le.key] = "interface " + le.iface + " not found"
			continue
		}
		idx := l.Attrs().Index
		if other, dup := want[idx]; dup {
			status[le.key] = "interface " + le.iface + " is also used by " + other
			continue
		}
		want[idx] = le.key
		eps = append(eps, policymaps.Endpoint{Ifindex: idx, ID: id, IPv4: le.ips, MAC: le.mac})
		status[le.key] = "programs not attached"
	}
	if _, err := e.w.Sync(e.comp, eps); err != nil {
		e.status, e.writeErr = status, err
		return append(errs, fmt.Errorf("write the policy maps: %w", err))
	}
	e.written, e.writeErr = e.compiled, nil
	if len(e.renumbered) > 0 {
		if err := e.dp.DeleteRuleCounters(e.renumbered...); err != nil {
			e.f.log.Warn("reset the counters of renumbered rules", zap.Error(err))
		}
		e.renumbered = nil
	}
	if full {
		// Flows idle past their timeout go now and then (the map is an LRU too).
		if kept, deleted, err := e.dp.SweepConntrack(); err != nil {
			e.f.log.Warn("conntrack sweep", zap.Error(err))
		} else if deleted > 0 {
			e.f.log.Debug("conntrack swept", zap.Int("kept", kept), zap.Int("deleted", deleted))
		}
	}
	var failed []error
	for idx, key := range want {
		if _, ok := e.attached[idx]; ok && !full {
			status[key] = ""
			continue
		}
		var err error
		e.nst.Do(func() { _, err = e.dp.Attach(idx, ebpf.AttachOptions{}) })
		if err != nil {
			status[key] = err.Error()
			failed = append(failed, fmt.Errorf("endpoint %s: %w", key, err))
			continue
		}
		e.attached[idx] = key
		status[key] = ""
	}
	for idx, key := range e.attached {
		if _, ok := want[idx]; ok {
			continue
		}
		var err error
		e.nst.Do(func() { err = e.dp.Detach(idx) })
		if err != nil {
			failed = append(failed, fmt.Errorf("endpoint %s: %w", key, err))
			continue
		}
		delete(e.attached, idx)
		// A later interface with this index starts its counters from zero.
		if err := e.dp.DeleteEndpointCounters(idx); err != nil {
			e.f.log.Warn("reset the counters of a detached interface", zap.Error(err), zap.String("endpoint", key))
		}
	}
	e.status = status
	e.needs = len(failed) > 0
	return append(errs, failed...)
}

// report is the policy part of the status published after an apply.
func (e *enforcer) report() *PolicyStatus {
	ps := &PolicyStatus{Enabled: true, Sources: append([]PolicySource{}, e.written...)}
	var msgs []string
	if e.cErr != nil {
		msgs = append(msgs, "compile policy (the last good policy stays): "+e.cErr.Error())
	}
	if e.writeErr != nil {
		msgs = append(msgs, "write the policy maps: "+e.writeErr.Error())
	}
	for key, why := range e.status {
		if why == "" {
			ps.Enforced++
		} else {
			ps.NotEnforced++
			msgs = append(msgs, "endpoint "+key+": "+why)
		}
	}
	sort.Strings(msgs)
	ps.Error = strings.Join(msgs, "; ")
	ps.Programmed = e.comp != nil && e.cErr == nil && e.writeErr == nil && ps.NotEnforced == 0
	if e.comp != nil {
		ps.Rules = len(e.comp.Rules)
	}
	return ps
}

func sortSources(s []PolicySource) {
	sort.Slice(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// endpointPolicy says whether the local endpoint key is enforced, and if not why.
func (e *enforcer) endpointPolicy(key string) (bool, string) {
	msg, ok := e.status[key]
	if !ok {
		return false, "policy not programmed yet"
	}
	return msg == "", msg
}

// workloadPrefixes start the names of the interfaces Tabby's programs go on.
var workloadPrefixes = []string{"cali", "tap", "vnet"}

// removeDatapath runs when policy is off but a pin directory was named: an earlier
// run's programs would go on enforcing a policy nobody maintains, so they come off
// and the pins go. Failures are logged; the next start tries again.
func (f *Felix) removeDatapath(nst *dataplane.NSThread) {
	if _, err := os.Stat(f.cfg.BPFPinDir); errors.Is(err, os.ErrNotExist) {
		return
	}
	var n int
	var err error
	nst.Do(func() { n, err = ebpf.Remove(f.cfg.BPFPinDir, workloadPrefixes) })
	if err != nil {
		f.log.Warn("policy is off: could not remove every earlier policy program and pin", zap.Error(err))
		return
	}
	f.log.Info("policy is off: removed the policy programs of an earlier run", zap.Int("interfaces", n),
		zap.String("pinDir", f.cfg.BPFPinDir))
}
