package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// watchedKinds are the datastore kinds Calc reads.
var watchedKinds = []datastore.Kind{
	datastore.KindNode, datastore.KindBGPConfiguration, datastore.KindBGPPeer, datastore.KindBGPFilter,
	datastore.KindIPPool, datastore.KindIPAMBlock, datastore.KindSecret,
}

// inputs is the controller's cache of the datastore: one map per kind, filled by one
// watch per kind. A tabby.dev object that fails validation does not replace the last
// valid version of it (Calc would skip it, and the node keeps its sessions); it is
// stored only when there is no earlier version, so Calc reports it.
type inputs struct {
	log     *zap.Logger
	mu      sync.Mutex
	objs    map[string]map[string]datastore.Object // kind -> namespace/name -> object
	synced  map[string]bool
	errs    map[string]string // kind -> last watch error, or invalid object kept out
	changed chan struct{}     // a buffered kick: something changed
}

func newInputs(log *zap.Logger) *inputs {
	in := &inputs{log: log, objs: map[string]map[string]datastore.Object{}, synced: map[string]bool{},
		errs: map[string]string{}, changed: make(chan struct{}, 1)}
	for _, k := range watchedKinds {
		in.objs[k.Name] = map[string]datastore.Object{}
	}
	return in
}

func (in *inputs) kick() {
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

// allSynced reports whether every watch has delivered its initial list.
func (in *inputs) allSynced() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, k := range watchedKinds {
		if !in.synced[k.Name] {
			return false
		}
	}
	return true
}

// snapshot builds Calc's input from the cache.
func (in *inputs) snapshot(node, secretNS string) (Input, []Problem) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := Input{NodeName: node, SecretNamespace: secretNS}
	for _, o := range in.objs[datastore.KindNode.Name] {
		out.Nodes = append(out.Nodes, o.(*v1.Node))
	}
	for _, o := range in.objs[datastore.KindBGPConfiguration.Name] {
		out.Configs = append(out.Configs, o.(*v1.BGPConfiguration))
	}
	for _, o := range in.objs[datastore.KindBGPPeer.Name] {
		out.Peers = append(out.Peers, o.(*v1.BGPPeer))
	}
	for _, o := range in.objs[datastore.KindBGPFilter.Name] {
		out.Filters = append(out.Filters, o.(*v1.BGPFilter))
	}
	for _, o := range in.objs[datastore.KindIPPool.Name] {
		out.Pools = append(out.Pools, o.(*v1.IPPool))
	}
	for _, o := range in.objs[datastore.KindIPAMBlock.Name] {
		b := o.(*v1.IPAMBlock)
		if relevantBlock(b, node) {
			out.Blocks = append(out.Blocks, b)
		}
	}
	for _, o := range in.objs[datastore.KindSecret.Name] {
		out.Secrets = append(out.Secrets, o.(*corev1.Secret))
	}
	var probs []Problem
	for _, k := range watchedKinds {
		if e := in.errs[k.Name]; e != "" {
			probs = append(probs, Problem{Object: "watch " + k.Name, Reason: e})
		}
	}
	return out, probs
}

// relevantBlock: the block is affine to node, or node holds one of its addresses.
func relevantBlock(b *v1.IPAMBlock, node string) bool {
	if b.Spec.Affinity != nil && *b.Spec.Affinity == "host:"+node {
		return true
	}
	return slices.ContainsFunc(b.Spec.Attributes, func(a v1.AllocationAttribute) bool { return a.Secondary["node"] == node })
}

func objKey(o datastore.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// set stores o unless it is an invalid version of an object already held.
func (in *inputs) set(kind datastore.Kind, o datastore.Object) {
	key := objKey(o)
	if kind.Tabby {
		if err := v1.Validate(o); err != nil {
			if _, had := in.objs[kind.Name][key]; had {
				in.log.Warn("invalid object in the datastore; keeping its last valid version",
					zap.String("kind", kind.Name), zap.String("name", o.GetName()), zap.Error(err))
				in.errs[kind.Name] = "invalid " + kind.Name + " " + o.GetName() + " kept out: " + err.Error()
				return
			}
		}
	}
	in.objs[kind.Name][key] = o
}

// watch follows one kind until ctx ends, relisting after errors; the events up to
// Synced replace the kind's whole map.
func (in *inputs) watch(ctx context.Context, s datastore.Store, kind datastore.Kind, opts datastore.WatchOptions) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ch, err := s.Watch(ctx, kind, opts)
		if err != nil {
			in.log.Warn("datastore watch failed; retrying", zap.String("kind", kind.Name), zap.Error(err))
			in.mu.Lock()
			in.errs[kind.Name] = "watch " + kind.Name + ": " + err.Error()
			in.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		var snap []datastore.Event
		inSnap := true
		for ev := range ch {
			if inSnap {
				if ev.Type != datastore.Synced {
					snap = append(snap, ev)
					continue
				}
				in.mu.Lock()
				old := in.objs[kind.Name]
				in.objs[kind.Name] = map[string]datastore.Object{}
				delete(in.errs, kind.Name)
				for _, e := range snap {
					if e.Object == nil {
						continue
					}
					if e.Type == datastore.Deleted {
						delete(in.objs[kind.Name], objKey(e.Object))
						continue
					}
					if prev, ok := old[objKey(e.Object)]; ok {
						in.objs[kind.Name][objKey(e.Object)] = prev // so set keeps it if the new one is invalid
					}
					in.set(kind, e.Object)
				}
				in.synced[kind.Name] = true
				in.mu.Unlock()
				inSnap, snap = false, nil
				in.kick()
				continue
			}
			if ev.Object == nil {
				continue
			}
			in.log.Debug("datastore event", zap.String("kind", kind.Name), zap.String("type", string(ev.Type)), zap.String("name", ev.Object.GetName()))
			in.mu.Lock()
			if ev.Type == datastore.Deleted {
				delete(in.objs[kind.Name], objKey(ev.Object))
			} else {
				in.set(kind, ev.Object)
			}
			in.mu.Unlock()
			in.kick()
		}
	}
}
