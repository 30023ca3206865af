package agent

import (
	"context"
	"net/netip"
	"reflect"
	"sync/atomic"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func getNode(t *testing.T, s datastore.Store, name string) *v1.Node {
	t.Helper()
	n, err := datastore.Get[*v1.Node](context.Background(), s, "", name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRegisterCreates(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	n, err := Register(ctx, s, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.0.2/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := v1.NodeSpec{
		BGP:       &v1.NodeBGPSpec{IPv4Address: "10.0.0.2/24"},
		Addresses: []v1.NodeAddress{{Address: "10.0.0.2/24", Type: AddressTabbyNodeIP}},
		OrchRefs:  []v1.OrchRef{{NodeName: "node-1", Orchestrator: "k8s"}},
	}
	if !reflect.DeepEqual(n.Spec, want) || !reflect.DeepEqual(getNode(t, s, "node-1").Spec, want) {
		t.Fatalf("spec %+v, want %+v", n.Spec, want)
	}
	// A second call with nothing new writes nothing.
	again, err := Register(ctx, s, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.0.2/24")}, nil)
	if err != nil || again.ResourceVersion != n.ResourceVersion {
		t.Fatalf("unchanged registration wrote: rv %s -> %s (%v)", n.ResourceVersion, again.ResourceVersion, err)
	}
	if _, err := Register(ctx, s, Registration{Name: "node-1"}, nil); err == nil {
		t.Fatal("registration without an address accepted")
	}
}

// TestRegisterKeepsUserFields: an update changes the address and keeps everything the
// agent does not own.
func TestRegisterKeepsUserFields(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	asn := v1.ASNumber(65001)
	user := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"rack": "r1"},
		Annotations: map[string]string{"note": "keep"}},
		Spec: v1.NodeSpec{
			BGP: &v1.NodeBGPSpec{IPv4Address: "10.0.0.2/24", IPv6Address: "fd00::2/64", ASNumber: &asn, RouteReflectorClusterID: "224.0.0.1"},
			Addresses: []v1.NodeAddress{{Address: "10.0.0.2/24", Type: AddressTabbyNodeIP}, {Address: "203.0.113.9", Type: "ExternalIP"},
				{Address: "10.99.0.1", Type: "Loopback"}},
			OrchRefs: []v1.OrchRef{{NodeName: "old-name", Orchestrator: "k8s"}, {NodeName: "hv-1", Orchestrator: "libvirt"}},
		}}
	if _, err := datastore.Create(ctx, s, user); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, s, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.1.7/23")}, nil); err != nil {
		t.Fatal(err)
	}
	got := getNode(t, s, "node-1")
	want := v1.NodeSpec{
		BGP: &v1.NodeBGPSpec{IPv4Address: "10.0.1.7/23", IPv6Address: "fd00::2/64", ASNumber: &asn, RouteReflectorClusterID: "224.0.0.1"},
		// No Kubernetes Node: the ExternalIP the user wrote stays.
		Addresses: []v1.NodeAddress{{Address: "10.0.1.7/23", Type: AddressTabbyNodeIP}, {Address: "203.0.113.9", Type: "ExternalIP"},
			{Address: "10.99.0.1", Type: "Loopback"}},
		OrchRefs: []v1.OrchRef{{NodeName: "node-1", Orchestrator: "k8s"}, {NodeName: "hv-1", Orchestrator: "libvirt"}},
	}
	if !reflect.DeepEqual(got.Spec, want) {
		t.Fatalf("spec\n got %+v\nwant %+v", got.Spec, want)
	}
	if got.Labels["rack"] != "r1" || got.Annotations["note"] != "keep" {
		t.Fatalf("metadata lost: %v %v", got.Labels, got.Annotations)
	}
}

// TestRegisterKubernetesAddresses: the InternalIP and ExternalIP of the Kubernetes Node
// of the same name are copied, replacing stale ones.
func TestRegisterKubernetesAddresses(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	kn := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "node-1"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.2"},
		{Type: corev1.NodeExternalIP, Address: "198.51.100.2"}}}}
	if _, err := datastore.Create(ctx, s, kn); err != nil {
		t.Fatal(err)
	}
	if _, err := datastore.Create(ctx, s, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Spec: v1.NodeSpec{Addresses: []v1.NodeAddress{{Address: "10.0.0.200", Type: "InternalIP"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, s, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.0.2/24")}, nil); err != nil {
		t.Fatal(err)
	}
	want := []v1.NodeAddress{{Address: "10.0.0.2/24", Type: AddressTabbyNodeIP}, {Address: "10.0.0.2", Type: "InternalIP"},
		{Address: "198.51.100.2", Type: "ExternalIP"}}
	if got := getNode(t, s, "node-1").Spec.Addresses; !reflect.DeepEqual(got, want) {
		t.Fatalf("addresses %+v, want %+v", got, want)
	}
}

// racingStore makes a user write the Node between the agent's read and its write, the
// first times the agent updates or creates it.
type racingStore struct {
	datastore.Store
	races   atomic.Int32
	writes  atomic.Int32
	onWrite func(ctx context.Context, s datastore.Store)
}

func (r *racingStore) race(ctx context.Context) {
	r.writes.Add(1)
	if r.races.Load() > 0 {
		r.races.Add(-1)
		r.onWrite(ctx, r.Store)
	}
}

func (r *racingStore) Update(ctx context.Context, obj datastore.Object) (datastore.Object, error) {
	r.race(ctx)
	return r.Store.Update(ctx, obj)
}

func (r *racingStore) Create(ctx context.Context, obj datastore.Object) (datastore.Object, error) {
	r.race(ctx)
	return r.Store.Create(ctx, obj)
}

// TestRegisterRetriesOnConflict: a user's concurrent change makes the agent's
// compare-and-swap fail; it reads again, retries, and keeps the user's change.
func TestRegisterRetriesOnConflict(t *testing.T) {
	mem := datastore.NewMemory()
	ctx := context.Background()
	if _, err := datastore.Create(ctx, mem, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}); err != nil {
		t.Fatal(err)
	}
	asn := v1.ASNumber(64999)
	rs := &racingStore{Store: mem, onWrite: func(ctx context.Context, s datastore.Store) {
		n, err := datastore.Get[*v1.Node](ctx, s, "", "node-1")
		if err != nil {
			t.Error(err)
			return
		}
		if n.Spec.BGP == nil {
			n.Spec.BGP = &v1.NodeBGPSpec{}
		}
		n.Spec.BGP.ASNumber = &asn
		n.Spec.BGP.RouteReflectorClusterID = "224.0.0.9"
		if _, err := datastore.Update(ctx, s, n); err != nil {
			t.Error(err)
		}
	}}
	rs.races.Store(2)
	n, err := Register(ctx, rs, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.0.2/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.writes.Load(); got != 3 {
		t.Errorf("%d writes, want 3 (two conflicts, then success)", got)
	}
	b := getNode(t, mem, "node-1").Spec.BGP
	if b.IPv4Address != "10.0.0.2/24" || b.ASNumber == nil || *b.ASNumber != asn || b.RouteReflectorClusterID != "224.0.0.9" {
		t.Fatalf("bgp %+v (returned %+v)", b, n.Spec.BGP)
	}

	// A creation race: someone creates the Node between the agent's read and create.
	mem2 := datastore.NewMemory()
	rs2 := &racingStore{Store: mem2, onWrite: func(ctx context.Context, s datastore.Store) {
		if _, err := datastore.Create(ctx, s, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"},
			Spec: v1.NodeSpec{BGP: &v1.NodeBGPSpec{ASNumber: &asn}}}); err != nil {
			t.Error(err)
		}
	}}
	rs2.races.Store(1)
	if _, err := Register(ctx, rs2, Registration{Name: "node-2", IPv4: netip.MustParsePrefix("10.0.0.3/24")}, nil); err != nil {
		t.Fatal(err)
	}
	b = getNode(t, mem2, "node-2").Spec.BGP
	if b.IPv4Address != "10.0.0.3/24" || b.ASNumber == nil || *b.ASNumber != asn {
		t.Fatalf("after a creation race: %+v", b)
	}

	// A writer that always wins: the agent gives up with a conflict.
	rs3 := &racingStore{Store: mem, onWrite: rs.onWrite}
	rs3.races.Store(100)
	if _, err := Register(ctx, rs3, Registration{Name: "node-1", IPv4: netip.MustParsePrefix("10.0.0.4/24")}, nil); err == nil {
		t.Fatal("registration against an always-conflicting writer succeeded")
	}
}
