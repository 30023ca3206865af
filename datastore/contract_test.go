package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// runContract checks the Store contract; every backend must pass it. prefix keeps
// names unique when backends share state between runs.
func runContract(t *testing.T, s datastore.Store, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := func(n string) string { return prefix + n }

	t.Run("CRUD", func(t *testing.T) {
		p := pool(name("crud"), "10.10.0.0/16")
		got, err := datastore.Create(ctx, s, p)
		if err != nil {
			t.Fatal(err)
		}
		if got.ResourceVersion == "" || got.Spec.BlockSize != 26 || got.Spec.NodeSelector != "all()" {
			t.Fatalf("created without rv or defaults: %+v %+v", got.ObjectMeta, got.Spec)
		}
		read, err := datastore.Get[*v1.IPPool](ctx, s, "", name("crud"))
		if err != nil || read.Spec.CIDR != "10.10.0.0/16" {
			t.Fatalf("get: %v %+v", err, read)
		}
		read.Spec.NATOutgoing = true
		upd, err := datastore.Update(ctx, s, read)
		if err != nil || !upd.Spec.NATOutgoing || upd.ResourceVersion == read.ResourceVersion {
			t.Fatalf("update: %v", err)
		}
		// The old version is stale now.
		read.Spec.Disabled = true
		if _, err := datastore.Update(ctx, s, read); !errors.Is(err, datastore.ErrConflict) {
			t.Fatalf("stale update: want ErrConflict, got %v", err)
		}
		if _, err := datastore.Create(ctx, s, pool(name("crud"), "10.11.0.0/16")); !errors.Is(err, datastore.ErrAlreadyExists) {
			t.Fatalf("duplicate create: want ErrAlreadyExists, got %v", err)
		}
		upd.ResourceVersion = ""
		if _, err := datastore.Update(ctx, s, upd); err == nil {
			t.Fatal("update without resourceVersion accepted")
		}
		if err := s.Delete(ctx, datastore.KindIPPool, "", name("crud"), datastore.DeleteOptions{ResourceVersion: read.ResourceVersion}); !errors.Is(err, datastore.ErrConflict) {
			t.Fatalf("delete with stale precondition: want ErrConflict, got %v", err)
		}
		if err := s.Delete(ctx, datastore.KindIPPool, "", name("crud"), datastore.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, datastore.KindIPPool, "", name("crud")); !errors.Is(err, datastore.ErrNotFound) {
			t.Fatalf("get after delete: want ErrNotFound, got %v", err)
		}
		if err := s.Delete(ctx, datastore.KindIPPool, "", name("crud"), datastore.DeleteOptions{}); !errors.Is(err, datastore.ErrNotFound) {
			t.Fatalf("second delete: want ErrNotFound, got %v", err)
		}
	})

	t.Run("ConcurrentWritersOneWins", func(t *testing.T) {
		base, err := datastore.Create(ctx, s, pool(name("race"), "10.12.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Delete(ctx, datastore.KindIPPool, "", name("race"), datastore.DeleteOptions{})
		for round := 0; round < 5; round++ {
			cur, err := datastore.Get[*v1.IPPool](ctx, s, "", base.Name)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, 2)
			for i := range 2 {
				mine := cur.DeepCopy()
				mine.Labels = map[string]string{"writer": fmt.Sprint(i), "round": fmt.Sprint(round)}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = datastore.Update(ctx, s, mine)
				}()
			}
			close(start)
			wg.Wait()
			wins, conflicts := 0, 0
			for _, e := range errs {
				switch {
				case e == nil:
					wins++
				case errors.Is(e, datastore.ErrConflict):
					conflicts++
				default:
					t.Fatalf("unexpected error: %v", e)
				}
			}
			if wins != 1 || conflicts != 1 {
				t.Fatalf("round %d: %d wins, %d conflicts (errors %v)", round, wins, conflicts, errs)
			}
		}
	})

	t.Run("InvalidIsNotWritten", func(t *testing.T) {
		bad := pool(name("bad"), "10.0.0.1/24")
		_, err := s.Create(ctx, bad)
		if !errors.Is(err, v1.ErrInvalid) {
			t.Fatalf("want ErrInvalid, got %v", err)
		}
		if _, err := s.Get(ctx, datastore.KindIPPool, "", name("bad")); !errors.Is(err, datastore.ErrNotFound) {
			t.Fatalf("invalid pool was written: %v", err)
		}
		a, err := datastore.Create(ctx, s, pool(name("ov-a"), "10.20.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Delete(ctx, datastore.KindIPPool, "", a.Name, datastore.DeleteOptions{})
		_, err = s.Create(ctx, pool(name("ov-b"), "10.20.128.0/17"))
		if !errors.Is(err, v1.ErrInvalid) {
			t.Fatalf("overlapping pool: want ErrInvalid, got %v", err)
		}
		// An update of a pool does not overlap with itself.
		a.Spec.Disabled = true
		if _, err := datastore.Update(ctx, s, a); err != nil {
			t.Fatalf("update of a pool: %v", err)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		pre, err := datastore.Create(ctx, s, pool(name("w-pre"), "10.30.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Delete(ctx, datastore.KindIPPool, "", pre.Name, datastore.DeleteOptions{})
		ch, err := s.Watch(wctx, datastore.KindIPPool, datastore.WatchOptions{ResyncPeriod: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		waitEvent(t, ch, datastore.Added, pre.Name)
		waitEvent(t, ch, datastore.Synced, "")
		p, err := datastore.Create(ctx, s, pool(name("w-new"), "10.31.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		waitEvent(t, ch, datastore.Added, p.Name)
		p.Spec.NATOutgoing = true
		if _, err := datastore.Update(ctx, s, p); err != nil {
			t.Fatal(err)
		}
		ev := waitEvent(t, ch, datastore.Modified, p.Name)
		if !ev.Object.(*v1.IPPool).Spec.NATOutgoing {
			t.Error("modified event carries the old object")
		}
		if err := s.Delete(ctx, datastore.KindIPPool, "", p.Name, datastore.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, ch, datastore.Deleted, p.Name)
		wcancel()
		for range ch {
		}
	})

	t.Run("NamespacedAndLabels", func(t *testing.T) {
		ns := name("ns")
		if _, err := s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		defer s.Delete(ctx, datastore.KindNamespace, "", ns, datastore.DeleteOptions{})
		for i, app := range []string{"web", "db", "web"} {
			w := wep(ns, fmt.Sprintf("w%d", i), app)
			if _, err := s.Create(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		webs, err := datastore.List[*v1.WorkloadEndpoint](ctx, s, datastore.ListOptions{Namespace: ns, LabelSelector: "app=web"})
		if err != nil || len(webs) != 2 || webs[0].Name != "w0" || webs[1].Name != "w2" {
			t.Fatalf("label list: %v %d", err, len(webs))
		}
		all, err := datastore.List[*v1.WorkloadEndpoint](ctx, s, datastore.ListOptions{Namespace: ns})
		if err != nil || len(all) != 3 {
			t.Fatalf("namespace list: %v %d", err, len(all))
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if _, err := s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: ns}}
		if _, err := s.Create(ctx, np); err != nil {
			t.Fatal(err)
		}
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp", Namespace: ns}, StringData: map[string]string{"pw": "x"}, Data: map[string][]byte{"pw": []byte("x")}}
		if _, err := s.Create(ctx, sec); err != nil {
			t.Fatal(err)
		}
		got, err := datastore.Get[*corev1.Secret](ctx, s, ns, "bgp")
		if err != nil || string(got.Data["pw"]) != "x" {
			t.Fatalf("secret: %v", err)
		}
		pods, err := datastore.List[*corev1.Pod](ctx, s, datastore.ListOptions{Namespace: ns})
		if err != nil || len(pods) != 1 {
			t.Fatalf("pods: %v %d", err, len(pods))
		}
		for _, n := range []string{"w0", "w1", "w2"} {
			if err := s.Delete(ctx, datastore.KindWorkloadEndpoint, ns, n, datastore.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []datastore.Kind{datastore.KindPod, datastore.KindK8sNetworkPolicy, datastore.KindSecret} {
			objs, _ := s.List(ctx, k, datastore.ListOptions{Namespace: ns})
			for _, o := range objs {
				_ = s.Delete(ctx, k, ns, o.GetName(), datastore.DeleteOptions{})
			}
		}
	})
}

func waitEvent(t *testing.T, ch <-chan datastore.Event, typ datastore.EventType, name string) datastore.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed while waiting for %s %s", typ, name)
			}
			if ev.Type == typ && (name == "" || (ev.Object != nil && ev.Object.GetName() == name)) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event for %q within 20s", typ, name)
		}
	}
}

func pool(name, cidr string) *v1.IPPool {
	return &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.IPPoolSpec{CIDR: cidr}}
}

func wep(ns, name, app string) *v1.WorkloadEndpoint {
	return &v1.WorkloadEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app}},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: "pod", Workload: name, Node: "n1",
			InterfaceName: "cali" + name, IPNetworks: []string{"10.40.0.1/32"}},
	}
}
