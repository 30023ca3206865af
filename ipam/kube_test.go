package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/k8senv"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	k8senv.Main(m, k8senv.Options{CRDDir: "../charts/tabby/crds"}, &env)
}

// TestKubeConcurrentAllocation is the bar: against the real kube-apiserver, 8
// goroutines acting as 4 nodes allocate 2,000 addresses from one /20 pool; no address
// twice, every block one affine node, ipam check clean, and releasing everything
// leaves the pool empty.
func TestKubeConcurrentAllocation(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	k8senv.Require(t, env)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const total, workers, nodes, ns = 2000, 8, 4, "ipam-conc"
	mkPool(t, s, "conc", "10.80.0.0/20", 26)
	for i := range nodes {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)}}
		if _, err := s.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	parallel(t, workers, total, func(i int) error {
		_, err := s.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "none"}}}})
		return err
	})

	start := time.Now()
	ips := make([]netip.Addr, total)
	allocators := make([]*ipam.Allocator, workers)
	for w := range allocators {
		allocators[w] = ipam.New(s, ipam.Options{})
	}
	parallelW(t, workers, total, func(w, i int) error {
		pod := fmt.Sprintf("p%d", i)
		al, err := allocators[w].Assign(ctx, ipam.Request{
			HandleID: ipam.PodHandle(ns, pod, fmt.Sprintf("c%d", i)), Node: fmt.Sprintf("node-%d", w%nodes),
			Attrs: map[string]string{ipam.AttrType: "pod", ipam.AttrNamespace: ns, ipam.AttrPod: pod},
		})
		ips[i] = al.IP
		return err
	})
	t.Logf("%d allocations with %d workers in %v", total, workers, time.Since(start))

	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if j, dup := seen[ip]; dup {
			t.Fatalf("%s handed out twice (allocations %d and %d)", ip, j, i)
		}
		seen[ip] = i
	}
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, s, datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	affs, err := datastore.List[*v1.BlockAffinity](ctx, s, datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	affByBlock := map[string][]string{}
	for _, a := range affs {
		affByBlock[a.Spec.CIDR] = append(affByBlock[a.Spec.CIDR], a.Spec.Node+"/"+string(a.Spec.State))
	}
	for _, b := range blocks {
		got := affByBlock[b.Spec.CIDR]
		if b.Spec.Affinity == nil || len(got) != 1 || got[0] != (*b.Spec.Affinity)[len("host:"):]+"/confirmed" {
			t.Errorf("block %s (affinity %v) has affinities %v", b.Spec.CIDR, b.Spec.Affinity, got)
		}
	}
	a := ipam.New(s, ipam.Options{})
	rep, err := a.Check(ctx, ipam.CheckOptions{Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.InUse != total || len(rep.Problems) != 0 {
		t.Fatalf("check: %d in use, problems %+v", rep.InUse, rep.Problems)
	}

	// Two pods go away without a release: check calls exactly their addresses leaked.
	for _, i := range []int{7, 1234} {
		if err := s.Delete(ctx, datastore.KindPod, ns, fmt.Sprintf("p%d", i), datastore.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = a.Check(ctx, ipam.CheckOptions{Interval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 2 || rep.Problems[0].Kind != ipam.ProblemLeaked {
		t.Fatalf("want 2 leaks, got %+v", rep.Problems)
	}
	done, err := a.ReleaseProblems(ctx, rep.Problems)
	if err != nil || len(done) != 2 {
		t.Fatalf("release from report: %v %v", done, err)
	}

	parallelW(t, workers, total, func(w, i int) error {
		_, err := allocators[w].ReleaseHandle(ctx, ipam.PodHandle(ns, fmt.Sprintf("p%d", i), fmt.Sprintf("c%d", i)))
		return err
	})
	u, err := a.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Pools) != 1 || u.Pools[0].InUse != 0 || u.Pools[0].Free != 4096 {
		t.Fatalf("pool not empty after releasing everything: %+v", u.Pools)
	}
	released := 0
	for i := range nodes {
		n, err := a.ReleaseEmptyBlocks(ctx, fmt.Sprintf("node-%d", i), 0) // stamps empty-since
		if err != nil {
			t.Fatal(err)
		}
		released += n
		n, err = a.ReleaseEmptyBlocks(ctx, fmt.Sprintf("node-%d", i), 0)
		if err != nil {
			t.Fatal(err)
		}
		released += n
	}
	if released != len(blocks) {
		t.Fatalf("released %d of %d empty blocks", released, len(blocks))
	}
	handles, _ := datastore.List[*v1.IPAMHandle](ctx, s, datastore.ListOptions{})
	affs, _ = datastore.List[*v1.BlockAffinity](ctx, s, datastore.ListOptions{})
	if len(handles) != 0 || len(affs) != 0 {
		t.Fatalf("left behind: %d handles, %d affinities", len(handles), len(affs))
	}
}

func parallel(t *testing.T, workers, n int, f func(i int) error) {
	parallelW(t, workers, n, func(_, i int) error { return f(i) })
}

func parallelW(t *testing.T, workers, n int, f func(w, i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := f(w, i); err != nil {
					errs <- fmt.Errorf("item %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
