package podlabels_test

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/podlabels"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	self  = "node-a"
	other = "node-b"
	ns    = "shop"
)

func mkPod(t *testing.T, s datastore.Store, name, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p, err := datastore.Create(context.Background(), s, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mkWEP writes the endpoint tabby-cni would write on node for pod (its labels as
// given: stale on purpose in some tests).
func mkWEP(t *testing.T, s datastore.Store, node, pod string, labels map[string]string) *v1.WorkloadEndpoint {
	t.Helper()
	w, err := datastore.Create(context.Background(), s, &v1.WorkloadEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cni.WEPName(node, pod, "eth0"), Labels: labels},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: v1.OrchestratorPod, Workload: pod, Node: node, Endpoint: "eth0",
			InterfaceName: cni.VethName(ns, pod), IPNetworks: []string{"10.65.0.9/32"}, Profiles: []string{cni.ProfilePrefix + ns}}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func getWEP(t *testing.T, s datastore.Store, node, pod string) *v1.WorkloadEndpoint {
	t.Helper()
	w, err := datastore.Get[*v1.WorkloadEndpoint](context.Background(), s, ns, cni.WEPName(node, pod, "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func relabel(t *testing.T, s datastore.Store, name string, labels map[string]string) {
	t.Helper()
	p, err := datastore.Get[*corev1.Pod](context.Background(), s, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = labels
	if _, err := datastore.Update(context.Background(), s, p); err != nil {
		t.Fatal(err)
	}
}

// cniLabels is what tabby-cni writes for a pod in ns with labels l.
func cniLabels(l map[string]string) map[string]string {
	out := maps.Clone(l)
	if out == nil {
		out = map[string]string{}
	}
	out["tabby.dev/namespace"] = ns
	out["tabby.dev/orchestrator"] = "k8s"
	return out
}

// start runs a controller for self over s until the test ends.
func start(t *testing.T, s datastore.Store) *podlabels.Controller {
	t.Helper()
	c, err := podlabels.New(podlabels.Config{NodeName: self, Store: s, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantLabels(t *testing.T, s datastore.Store, node, pod string, want map[string]string) func() error {
	return func() error {
		if got := getWEP(t, s, node, pod).Labels; !maps.Equal(got, want) {
			return fmt.Errorf("labels of %s's endpoint: %v, want %v", pod, got, want)
		}
		return nil
	}
}

func TestLabelsRule(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web",
		Labels: map[string]string{"app": "web", "tabby.dev/namespace": "spoof", "tabby.dev/orchestrator": "x"}}}
	got := podlabels.Labels(pod)
	if want := cniLabels(map[string]string{"app": "web"}); !maps.Equal(got, want) {
		t.Fatalf("Labels %v, want %v", got, want)
	}
	if pod.Labels["tabby.dev/namespace"] != "spoof" {
		t.Fatal("Labels changed the pod's labels")
	}
}

// TestFollowsPodLabels: a stale endpoint is fixed by the resync at start; a label
// added, changed and removed on the Pod reaches its endpoint; a Pod on another node
// with a stale endpoint on that node, and an endpoint here whose Pod is gone, are
// left alone.
func TestFollowsPodLabels(t *testing.T) {
	s := datastore.NewMemory()
	mkPod(t, s, "web", self, map[string]string{"app": "web"})
	mkWEP(t, s, self, "web", cniLabels(map[string]string{"app": "old"}))
	mkPod(t, s, "far", other, map[string]string{"app": "far"})
	farWEP := mkWEP(t, s, other, "far", cniLabels(map[string]string{"app": "stale"}))
	orphan := mkWEP(t, s, self, "gone", cniLabels(map[string]string{"app": "gone"}))

	c := start(t, s)
	waitFor(t, "stale endpoint fixed at start", wantLabels(t, s, self, "web", cniLabels(map[string]string{"app": "web"})))

	// The other node's pod changes first: the events are handled in order, so once the
	// local change is seen, the remote one was handled (and ignored).
	relabel(t, s, "far", map[string]string{"app": "far", "role": "db"})
	relabel(t, s, "web", map[string]string{"app": "web", "role": "locked"})
	waitFor(t, "label added", wantLabels(t, s, self, "web", cniLabels(map[string]string{"app": "web", "role": "locked"})))
	relabel(t, s, "web", map[string]string{"role": "open"})
	waitFor(t, "label changed and removed", wantLabels(t, s, self, "web", cniLabels(map[string]string{"role": "open"})))

	if w := getWEP(t, s, other, "far"); w.ResourceVersion != farWEP.ResourceVersion {
		t.Errorf("the endpoint on %s was written: labels %v", other, w.Labels)
	}
	if w := getWEP(t, s, self, "gone"); w.ResourceVersion != orphan.ResourceVersion {
		t.Errorf("the endpoint of a gone pod was written: labels %v", w.Labels)
	}
	if st := c.Stats(); !st.Synced || st.Updates != 3 || st.Failures != 0 {
		t.Errorf("stats %+v, want synced, 3 updates, no failure", st)
	}
}

// TestPodOnOtherNodeIgnored: a Pod with the same name as a local endpoint's workload
// but scheduled on another node (the local endpoint is a leftover) is not copied.
func TestPodOnOtherNodeIgnored(t *testing.T) {
	s := datastore.NewMemory()
	leftover := mkWEP(t, s, self, "db", cniLabels(map[string]string{"app": "db"}))
	mkPod(t, s, "db", other, map[string]string{"app": "db"})
	mkPod(t, s, "marker", self, map[string]string{"app": "marker"})
	mkWEP(t, s, self, "marker", cniLabels(nil))
	start(t, s)
	relabel(t, s, "db", map[string]string{"app": "db", "role": "new"})
	relabel(t, s, "marker", map[string]string{"app": "marker", "step": "2"})
	waitFor(t, "marker endpoint updated", wantLabels(t, s, self, "marker", cniLabels(map[string]string{"app": "marker", "step": "2"})))
	if w := getWEP(t, s, self, "db"); w.ResourceVersion != leftover.ResourceVersion {
		t.Errorf("the endpoint was written from another node's pod: labels %v", w.Labels)
	}
}

// racingStore writes an annotation on the endpoint just before the controller's first
// endpoint update, which then meets a real compare-and-swap conflict.
type racingStore struct {
	datastore.Store
	updates atomic.Int32
}

func (s *racingStore) Update(ctx context.Context, obj datastore.Object) (datastore.Object, error) {
	if w, ok := obj.(*v1.WorkloadEndpoint); ok && s.updates.Add(1) == 1 {
		fresh, err := datastore.Get[*v1.WorkloadEndpoint](ctx, s.Store, w.Namespace, w.Name)
		if err != nil {
			return nil, err
		}
		fresh.Annotations = map[string]string{"other": "writer"}
		if _, err := s.Store.Update(ctx, fresh); err != nil {
			return nil, err
		}
	}
	return s.Store.Update(ctx, obj)
}

func TestConflictRetried(t *testing.T) {
	mem := datastore.NewMemory()
	mkPod(t, mem, "web", self, map[string]string{"app": "web"})
	mkWEP(t, mem, self, "web", cniLabels(map[string]string{"app": "web"}))
	s := &racingStore{Store: mem}
	c := start(t, s)
	waitFor(t, "synced", func() error {
		if !c.Stats().Synced {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	relabel(t, mem, "web", map[string]string{"app": "web", "role": "locked"})
	waitFor(t, "labels after a conflict", wantLabels(t, mem, self, "web", cniLabels(map[string]string{"app": "web", "role": "locked"})))
	w := getWEP(t, mem, self, "web")
	if w.Annotations["other"] != "writer" {
		t.Errorf("the other writer's annotation was lost: %v", w.Annotations)
	}
	// The watch may still deliver the annotation's version after our write: a second,
	// harmless conflict then ends in a re-read that finds the labels right.
	if st := c.Stats(); st.Conflicts < 1 || st.Updates != 1 || st.Failures != 0 {
		t.Errorf("stats %+v, want a conflict, 1 update, no failure", st)
	}
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := podlabels.New(podlabels.Config{Store: datastore.NewMemory()}); err == nil {
		t.Error("no node name: no error")
	}
	if _, err := podlabels.New(podlabels.Config{NodeName: self}); err == nil {
		t.Error("no store: no error")
	}
}

// failingStore refuses the first endpoint update as if the API server were down.
type failingStore struct {
	datastore.Store
	updates atomic.Int32
}

func (s *failingStore) Update(ctx context.Context, obj datastore.Object) (datastore.Object, error) {
	if _, ok := obj.(*v1.WorkloadEndpoint); ok && s.updates.Add(1) == 1 {
		return nil, fmt.Errorf("update: %w", datastore.ErrUnavailable)
	}
	return s.Store.Update(ctx, obj)
}

// TestFailedUpdateRetried: an update that fails is tried again without a new event.
func TestFailedUpdateRetried(t *testing.T) {
	mem := datastore.NewMemory()
	mkPod(t, mem, "web", self, map[string]string{"app": "web", "role": "locked"})
	mkWEP(t, mem, self, "web", cniLabels(map[string]string{"app": "web"}))
	c := start(t, &failingStore{Store: mem})
	waitFor(t, "labels after a failed update", wantLabels(t, mem, self, "web", cniLabels(map[string]string{"app": "web", "role": "locked"})))
	if st := c.Stats(); st.Failures != 1 || st.Updates != 1 {
		t.Errorf("stats %+v, want 1 failure, 1 update", st)
	}
}
