package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mkPool(t *testing.T, s datastore.Store, name, cidr string, blockSize int) {
	t.Helper()
	p := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	if _, err := s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func setConfig(t *testing.T, s datastore.Store, strict bool, maxBlocks int) {
	t.Helper()
	c := &v1.IPAMConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.IPAMConfigurationSpec{StrictAffinity: strict, MaxBlocksPerHost: maxBlocks}}
	if _, err := s.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func req(node string, i int) ipam.Request {
	return ipam.Request{HandleID: fmt.Sprintf("test.%s.%d", node, i), Node: node,
		Attrs: map[string]string{ipam.AttrType: "test"}}
}

func TestAssignFillsAffineBlockThenClaims(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.70.0.0/24", 28) // 16 blocks of 16
	a := ipam.New(s, ipam.Options{})
	seen := map[netip.Addr]bool{}
	var blocks []netip.Prefix
	for i := 0; i < 20; i++ {
		al, err := a.Assign(ctx, req("n1", i))
		if err != nil {
			t.Fatal(err)
		}
		if seen[al.IP] {
			t.Fatalf("duplicate %s", al.IP)
		}
		seen[al.IP] = true
		if al.Borrowed || al.Pool != "p" {
			t.Fatalf("unexpected allocation %+v", al)
		}
		if len(blocks) == 0 || blocks[len(blocks)-1] != al.Block {
			blocks = append(blocks, al.Block)
		}
	}
	if len(blocks) != 2 {
		t.Fatalf("20 addresses should fill one /28 and start a second, used blocks %v", blocks)
	}
	affs, _ := datastore.List[*v1.BlockAffinity](ctx, s, datastore.ListOptions{})
	if len(affs) != 2 {
		t.Fatalf("want 2 affinities, got %d", len(affs))
	}
	for _, af := range affs {
		if af.Spec.State != v1.BlockAffinityConfirmed || af.Spec.Node != "n1" {
			t.Errorf("affinity %+v", af.Spec)
		}
	}
	ips, err := a.AddressesOf(ctx, "test.n1.3")
	if err != nil || len(ips) != 1 {
		t.Fatalf("AddressesOf: %v %v", ips, err)
	}
}

func TestBorrowOnlyWhenPoolHasNoFreeBlock(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.71.0.0/27", 28) // 2 blocks
	a := ipam.New(s, ipam.Options{})
	// n1 and n2 claim one block each.
	if _, err := a.Assign(ctx, req("n1", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Assign(ctx, req("n2", 0)); err != nil {
		t.Fatal(err)
	}
	// n1 fills its block (16 addresses) then must borrow from n2's.
	var borrowed ipam.Allocation
	for i := 1; i <= 16; i++ {
		al, err := a.Assign(ctx, req("n1", i))
		if err != nil {
			t.Fatal(err)
		}
		if al.Borrowed {
			borrowed = al
			if i != 16 {
				t.Fatalf("borrowed at %d before own block was full", i)
			}
		}
	}
	if !borrowed.IP.IsValid() || !netip.MustParsePrefix("10.71.0.0/27").Contains(borrowed.IP) {
		t.Fatalf("no borrow: %+v", borrowed)
	}
	// A third node borrows too: there is no free block.
	al, err := a.Assign(ctx, req("n3", 0))
	if err != nil || !al.Borrowed {
		t.Fatalf("n3: %+v %v", al, err)
	}
}

func TestStrictAffinityAndMaxBlocks(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.72.0.0/27", 28)
	setConfig(t, s, true, 0)
	a := ipam.New(s, ipam.Options{})
	for i := 0; i < 16; i++ {
		if _, err := a.Assign(ctx, req("n1", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Assign(ctx, req("n2", 0)); err != nil {
		t.Fatal(err)
	}
	_, err := a.Assign(ctx, req("n1", 99))
	if !errors.Is(err, ipam.ErrNoFreeAddress) {
		t.Fatalf("strict: want ErrNoFreeAddress, got %v", err)
	}
	t.Log(err)

	s2 := datastore.NewMemory()
	mkPool(t, s2, "p", "10.73.0.0/24", 28)
	setConfig(t, s2, true, 1)
	a2 := ipam.New(s2, ipam.Options{})
	for i := 0; i < 16; i++ {
		if _, err := a2.Assign(ctx, req("n1", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a2.Assign(ctx, req("n1", 16)); !errors.Is(err, ipam.ErrNoFreeAddress) {
		t.Fatalf("maxBlocksPerHost: want ErrNoFreeAddress, got %v", err)
	}
}

func TestNodeSelectorDisabledAndRequestedPools(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	rack := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "rack-a"}, Spec: v1.IPPoolSpec{CIDR: "10.74.0.0/24", NodeSelector: "rack == 'a'"}}
	off := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "off"}, Spec: v1.IPPoolSpec{CIDR: "10.75.0.0/24", Disabled: true}}
	for _, p := range []*v1.IPPool{rack, off} {
		if _, err := s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	a := ipam.New(s, ipam.Options{CacheTTL: -1}) // labels change under it
	if _, err := a.Assign(ctx, req("n1", 0)); !errors.Is(err, ipam.ErrNoPool) {
		t.Fatalf("unlabelled node: want ErrNoPool, got %v", err)
	}
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"rack": "a"}}}
	if _, err := s.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	al, err := a.Assign(ctx, req("n1", 0))
	if err != nil || al.Pool != "rack-a" {
		t.Fatalf("labelled node: %+v %v", al, err)
	}
	r := req("n1", 1)
	r.Pools = []string{"off"}
	if _, err := a.Assign(ctx, r); !errors.Is(err, ipam.ErrNoPool) {
		t.Fatalf("disabled pool requested: %v", err)
	}
	r.Pools = []string{"10.74.0.0/24"}
	if _, err := a.Assign(ctx, r); err != nil {
		t.Fatalf("pool by CIDR: %v", err)
	}
}

func TestStaticAndReservations(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.76.0.0/24", 26)
	res := &v1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1.IPReservationSpec{ReservedCIDRs: []string{"10.76.0.0/30", "10.76.0.100"}}}
	if _, err := s.Create(ctx, res); err != nil {
		t.Fatal(err)
	}
	a := ipam.New(s, ipam.Options{})
	al, err := a.Assign(ctx, req("n1", 0))
	if err != nil {
		t.Fatal(err)
	}
	if netip.MustParsePrefix("10.76.0.0/30").Contains(al.IP) {
		t.Fatalf("reserved address handed out: %s", al.IP)
	}
	r := req("n2", 0)
	r.IP = netip.MustParseAddr("10.76.0.200")
	st, err := a.Assign(ctx, r)
	if err != nil || st.IP != r.IP {
		t.Fatalf("static: %+v %v", st, err)
	}
	r2 := req("n3", 0)
	r2.IP = r.IP
	if _, err := a.Assign(ctx, r2); !errors.Is(err, ipam.ErrAddressInUse) {
		t.Fatalf("taken static: %v", err)
	}
	r2.IP = netip.MustParseAddr("10.99.0.1")
	if _, err := a.Assign(ctx, r2); !errors.Is(err, ipam.ErrNotInPool) {
		t.Fatalf("outside pools: %v", err)
	}
	r2.IP = netip.MustParseAddr("10.76.0.100")
	if _, err := a.Assign(ctx, r2); !errors.Is(err, ipam.ErrNotInPool) {
		t.Fatalf("reserved static: %v", err)
	}
	// The same handle asking again for its address is fine (CNI ADD retried).
	if _, err := a.Assign(ctx, r); err != nil {
		t.Fatalf("idempotent static: %v", err)
	}
}

func TestReleaseAndEmptyBlockGrace(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.77.0.0/24", 26)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := ipam.New(s, ipam.Options{Now: func() time.Time { return now }})
	var ips []netip.Addr
	for i := 0; i < 3; i++ {
		al, err := a.Assign(ctx, req("n1", i))
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, al.IP)
	}
	got, err := a.ReleaseHandle(ctx, "test.n1.0")
	if err != nil || len(got) != 1 || got[0] != ips[0] {
		t.Fatalf("release handle: %v %v", got, err)
	}
	if got, err := a.ReleaseHandle(ctx, "test.n1.0"); err != nil || len(got) != 0 {
		t.Fatalf("second release: %v %v", got, err)
	}
	if err := a.ReleaseIP(ctx, ips[1]); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseIP(ctx, ips[1]); !errors.Is(err, ipam.ErrNotAllocated) {
		t.Fatalf("double release: %v", err)
	}
	if _, err := s.Get(ctx, datastore.KindIPAMHandle, "", "test.n1.1"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("handle of a released IP still there: %v", err)
	}
	if n, _ := a.ReleaseEmptyBlocks(ctx, "n1", time.Minute); n != 0 {
		t.Fatal("block with an allocation released")
	}
	if _, err := a.ReleaseHandle(ctx, "test.n1.2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.ReleaseEmptyBlocks(ctx, "n1", time.Minute); n != 0 {
		t.Fatal("empty block released before its grace period")
	}
	now = now.Add(2 * time.Minute)
	if n, err := a.ReleaseEmptyBlocks(ctx, "n1", time.Minute); n != 1 || err != nil {
		t.Fatalf("empty block not released after grace: %d %v", n, err)
	}
	blocks, _ := datastore.List[*v1.IPAMBlock](ctx, s, datastore.ListOptions{})
	affs, _ := datastore.List[*v1.BlockAffinity](ctx, s, datastore.ListOptions{})
	if len(blocks) != 0 || len(affs) != 0 {
		t.Fatalf("left behind: %d blocks, %d affinities", len(blocks), len(affs))
	}
}

// TestConcurrentNoDuplicates: 8 goroutines as 4 nodes on the memory store.
func TestConcurrentNoDuplicates(t *testing.T) {
	s := datastore.NewMemory()
	mkPool(t, s, "p", "10.78.0.0/22", 26)
	res := concurrentAssign(t, s, 8, 4, 600)
	checkUnique(t, res)
}

type result struct {
	handle string
	ip     netip.Addr
}

func concurrentAssign(t *testing.T, s datastore.Store, workers, nodes, total int) []result {
	t.Helper()
	ctx := context.Background()
	out := make([][]result, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := ipam.New(s, ipam.Options{})
			node := fmt.Sprintf("node-%d", w%nodes)
			for i := w; i < total; i += workers {
				h := fmt.Sprintf("test.%d", i)
				al, err := a.Assign(ctx, ipam.Request{HandleID: h, Node: node})
				if err != nil {
					errs <- fmt.Errorf("worker %d alloc %d: %w", w, i, err)
					return
				}
				out[w] = append(out[w], result{h, al.IP})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var all []result
	for _, r := range out {
		all = append(all, r...)
	}
	if len(all) != total {
		t.Fatalf("got %d allocations, want %d", len(all), total)
	}
	return all
}

func checkUnique(t *testing.T, res []result) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for _, r := range res {
		if h, dup := seen[r.ip]; dup {
			t.Fatalf("%s handed out twice: %s and %s", r.ip, h, r.handle)
		}
		seen[r.ip] = r.handle
	}
}
