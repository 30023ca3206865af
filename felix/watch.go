package felix

import (
	"context"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/validation"
)

// labelNode is the label IPAM puts on a node's blocks (ipam.LabelNode).
const labelNode = "tabby.dev/node"

// startWatches starts one goroutine per watched kind.
func (f *Felix) startWatches(ctx context.Context, wg *sync.WaitGroup) {
	wepOpts := datastore.WatchOptions{}
	wg.Add(2)
	go func() {
		defer wg.Done()
		f.watch(ctx, "WorkloadEndpoint", datastore.KindWorkloadEndpoint, wepOpts, func(objs []datastore.Object) {
			ws := make([]*v1.WorkloadEndpoint, 0, len(objs))
			for _, o := range objs {
				if w, ok := o.(*v1.WorkloadEndpoint); ok {
					ws = append(ws, w)
				}
			}
			f.graph.ReplaceEndpoints(ws)
			if f.pol != nil {
				f.pol.replace("WorkloadEndpoint", objs)
			}
		}, func(ev datastore.Event) {
			w, ok := ev.Object.(*v1.WorkloadEndpoint)
			switch {
			case !ok:
				f.log.Warn("unexpected object in the workload endpoint watch", zap.Any("object", ev.Object))
			case ev.Type == datastore.Deleted:
				f.graph.RemoveEndpoint(w.Namespace, w.Name)
			default:
				f.graph.UpsertEndpoint(w)
			}
			if ok && f.pol != nil {
				f.pol.update("WorkloadEndpoint", ev)
			}
		})
	}()
	if f.pol != nil {
		f.startPolicyWatches(ctx, wg)
	}
	blockOpts := datastore.WatchOptions{}
	// Narrow the watch to this node's blocks when the node name can be a label value;
	// the graph checks spec.affinity either way.
	if len(validation.IsValidLabelValue(f.cfg.NodeName)) == 0 {
		blockOpts.LabelSelector = labelNode + "=" + f.cfg.NodeName
	}
	go func() {
		defer wg.Done()
		f.watch(ctx, "IPAMBlock", datastore.KindIPAMBlock, blockOpts, func(objs []datastore.Object) {
			bs := make([]*v1.IPAMBlock, 0, len(objs))
			for _, o := range objs {
				if b, ok := o.(*v1.IPAMBlock); ok {
					bs = append(bs, b)
				}
			}
			f.graph.ReplaceBlocks(bs)
		}, func(ev datastore.Event) {
			b, ok := ev.Object.(*v1.IPAMBlock)
			switch {
			case !ok:
				f.log.Warn("unexpected object in the ipam block watch", zap.Any("object", ev.Object))
			case ev.Type == datastore.Deleted:
				f.graph.RemoveBlock(b.Name)
			default:
				f.graph.UpsertBlock(b)
			}
		})
	}()
}

// watch follows one kind until ctx ends. The events up to Synced are collected and
// given to replace as the whole set (so a watch that had to start again also removes
// what went away meanwhile); later events go to update. Both run under f.mu.
func (f *Felix) watch(ctx context.Context, name string, kind datastore.Kind, opts datastore.WatchOptions,
	replace func([]datastore.Object), update func(datastore.Event)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ch, err := f.cfg.Store.Watch(ctx, kind, opts)
		if err != nil {
			f.log.Warn("datastore watch failed; retrying", zap.String("kind", name), zap.Error(err),
				zap.Duration("backoff", backoff))
			f.setWatchErr(name, "watch "+name+": "+err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		f.setWatchErr(name, "")
		snapshot := map[string]datastore.Object{}
		inSnapshot := true
		for ev := range ch {
			if inSnapshot {
				switch ev.Type {
				case datastore.Synced:
					objs := make([]datastore.Object, 0, len(snapshot))
					for _, o := range snapshot {
						objs = append(objs, o)
					}
					f.mu.Lock()
					replace(objs)
					f.synced[name] = true
					f.mu.Unlock()
					f.log.Info("datastore watch synced", zap.String("kind", name), zap.Int("objects", len(objs)))
					inSnapshot, snapshot = false, nil
					f.wake()
				case datastore.Deleted:
					delete(snapshot, ev.Object.GetNamespace()+"/"+ev.Object.GetName())
				default:
					if ev.Object != nil {
						snapshot[ev.Object.GetNamespace()+"/"+ev.Object.GetName()] = ev.Object
					}
				}
				continue
			}
			if ev.Object == nil {
				continue
			}
			f.mu.Lock()
			update(ev)
			f.mu.Unlock()
			f.wake()
		}
	}
}

func (f *Felix) setWatchErr(name, msg string) {
	f.mu.Lock()
	changed := f.watchErrs[name] != msg
	if msg == "" {
		delete(f.watchErrs, name)
	} else {
		f.watchErrs[name] = msg
	}
	f.mu.Unlock()
	if changed {
		f.wake() // the status reports it
	}
}
