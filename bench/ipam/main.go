// Command ipam measures Tabby IPAM's allocation rate against a real kube-apiserver:
// 1, 4 and 16 concurrent allocators, each acting as its own node, each allocating from
// one shared pool, then releasing. No reference implementation runs here, so ref is -.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// goalPerSec is the rate at 16 allocators we hold ourselves to.
const goalPerSec = 100

func main() {
	perRun := flag.Int("n", 400, "allocations per run")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env, err := benchutil.StartKube(ctx)
	if err != nil {
		benchutil.Fatal(err)
	}
	defer env.Stop()
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		benchutil.Fatal(err)
	}
	fmt.Printf("ipam: %d allocations per run, /26 blocks, real kube-apiserver %s\n", *perRun, "v1.32.13")
	var last float64
	for i, workers := range []int{1, 4, 16} {
		cidr := fmt.Sprintf("10.%d.0.0/16", 90+i)
		pool := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", workers)}, Spec: v1.IPPoolSpec{CIDR: cidr}}
		if _, err := s.Create(ctx, pool); err != nil {
			benchutil.Fatal(err)
		}
		rate, rel, err := run(ctx, s, workers, *perRun, pool.Name)
		if err != nil {
			benchutil.Fatal(err)
		}
		fmt.Printf("  %2d allocators: %6.1f allocations/s, %6.1f releases/s\n", workers, rate, rel)
		last = rate
		if err := s.Delete(ctx, datastore.KindIPPool, "", pool.Name, datastore.DeleteOptions{}); err != nil {
			benchutil.Fatal(err)
		}
	}
	benchutil.Result("ipam", last, "/s", -1, fmt.Sprintf(">=%d/s@16", goalPerSec), last >= goalPerSec)
}

// run allocates n addresses with workers allocators (one node each), checks none is
// handed out twice, releases them, and returns both rates.
func run(ctx context.Context, s datastore.Store, workers, n int, pool string) (float64, float64, error) {
	ips := make([]netip.Addr, n)
	handle := func(i int) string { return fmt.Sprintf("bench.%s.%d", pool, i) }
	do := func(f func(a *ipam.Allocator, w, i int) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		start := time.Now()
		for w := range workers {
			a := ipam.New(s, ipam.Options{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := f(a, w, i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return time.Since(start), <-errs
	}
	took, err := do(func(a *ipam.Allocator, w, i int) error {
		al, err := a.Assign(ctx, ipam.Request{HandleID: handle(i), Node: fmt.Sprintf("bench-node-%d", w), Pools: []string{pool}})
		ips[i] = al.IP
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			return 0, 0, fmt.Errorf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	relTook, err := do(func(a *ipam.Allocator, _, i int) error {
		_, err := a.ReleaseHandle(ctx, handle(i))
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return float64(n) / took.Seconds(), float64(n) / relTook.Seconds(), nil
}
