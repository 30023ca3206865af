package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestIPAMCollector: the IPAM metrics count the pools and blocks of the datastore at
// scrape time, pool-wide and for this node's affine blocks.
func TestIPAMCollector(t *testing.T) {
	s := datastore.NewMemory()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []*v1.IPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "pods"}, Spec: v1.IPPoolSpec{CIDR: "10.90.0.0/24"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "spare"}, Spec: v1.IPPoolSpec{CIDR: "10.91.0.0/16", Disabled: true}},
	} {
		if _, err := s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	alloc := ipam.New(s, ipam.Options{})
	for i, node := range []string{"n1", "n1", "n1", "n2", "n2"} {
		if _, err := alloc.Assign(ctx, ipam.Request{HandleID: "h" + string(rune('a'+i)), Node: node}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newIPAMCollector(s, "n1", 5*time.Second))
	got, err := gatherSeries(reg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`tabby_ipam_addresses_capacity{pool="pods"}`:       256,
		`tabby_ipam_addresses_capacity{pool="spare"}`:      65536,
		`tabby_ipam_addresses_in_use{pool="pods"}`:         5,
		`tabby_ipam_addresses_in_use{pool="spare"}`:        0,
		`tabby_ipam_blocks{pool="pods"}`:                   2,
		`tabby_ipam_blocks{pool="spare"}`:                  0,
		`tabby_ipam_node_blocks{pool="pods"}`:              1,
		`tabby_ipam_node_blocks{pool="spare"}`:             0,
		`tabby_ipam_node_addresses_capacity{pool="pods"}`:  64,
		`tabby_ipam_node_addresses_capacity{pool="spare"}`: 0,
		`tabby_ipam_node_addresses_in_use{pool="pods"}`:    3,
		`tabby_ipam_node_addresses_in_use{pool="spare"}`:   0,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("IPAM metrics:\n got %v\nwant %v", got, want)
	}
}

// gatherSeries gathers reg into series written name{label="value",...} (labels sorted),
// with their values; every series must be a gauge.
func gatherSeries(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetGauge() == nil {
				return nil, fmt.Errorf("%s is not a gauge", mf.GetName())
			}
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out, nil
}

// listFailStore fails every List, as an unreachable API server does.
type listFailStore struct{ datastore.Store }

func (listFailStore) List(context.Context, datastore.Kind, datastore.ListOptions) ([]datastore.Object, error) {
	return nil, errors.New("connection refused")
}

// TestIPAMCollectorStoreDown: a scrape the datastore cannot answer fails for the IPAM
// metrics, with the reason, and the agent's other metrics are still served.
func TestIPAMCollectorStoreDown(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Config: testConfig(t), Store: listFailStore{datastore.NewMemory()},
		Dataplane: &fakeDataplane{}, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "list IP pools: connection refused") {
		t.Fatalf("gather: %v", err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "tabby_node_info"
	}
	if !found {
		t.Fatal("tabby_node_info missing when the IPAM metrics fail")
	}
}
