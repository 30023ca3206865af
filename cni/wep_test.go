package cni

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web-sa",
			Containers: []corev1.Container{
				{Name: "app", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 8080},
					{ContainerPort: 9999}, // unnamed: not a WEP port
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				}},
				{Name: "sidecar", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}},
			},
		},
	}
}

func TestBuildWEP(t *testing.T) {
	w := buildWEP(endpoint{Node: "node-a", Pod: testPod(), ContainerID: "c0ffee", IfName: "eth0",
		HostIfName: VethName("shop", "web-0"), MAC: "AA:BB:CC:00:11:22", IP: netip.MustParseAddr("10.65.0.9")})
	if w.Name != "node-a-k8s-web-0-eth0" || w.Namespace != "shop" {
		t.Fatalf("name %s/%s", w.Namespace, w.Name)
	}
	wantLabels := map[string]string{"app": "web", "tier": "front", "tabby.dev/namespace": "shop", "tabby.dev/orchestrator": "k8s"}
	if !reflect.DeepEqual(w.Labels, wantLabels) {
		t.Fatalf("labels %v, want %v", w.Labels, wantLabels)
	}
	s := w.Spec
	if s.Orchestrator != v1.OrchestratorPod || s.Workload != "web-0" || s.Node != "node-a" || s.ContainerID != "c0ffee" ||
		s.Endpoint != "eth0" || s.InterfaceName != VethName("shop", "web-0") || s.MAC != "aa:bb:cc:00:11:22" ||
		s.ServiceAccountName != "web-sa" {
		t.Fatalf("spec %+v", s)
	}
	if !reflect.DeepEqual(s.IPNetworks, []string{"10.65.0.9/32"}) || !reflect.DeepEqual(s.Profiles, []string{"kns.shop"}) {
		t.Fatalf("ipNetworks %v profiles %v", s.IPNetworks, s.Profiles)
	}
	wantPorts := []v1.WorkloadEndpointPort{
		{Name: "dns", Protocol: "UDP", Port: 53},
		{Name: "http", Protocol: "TCP", Port: 8080},
		{Name: "metrics", Protocol: "TCP", Port: 9090},
	}
	if !reflect.DeepEqual(s.Ports, wantPorts) {
		t.Fatalf("ports %+v, want %+v", s.Ports, wantPorts)
	}
	v1.Default(w)
	if err := v1.Validate(w); err != nil {
		t.Fatalf("the WEP does not validate: %v", err)
	}
	// The pod's labels are not changed.
	if _, ok := testPod().Labels["tabby.dev/namespace"]; ok {
		t.Fatal("pod labels mutated")
	}
}

func TestWEPDrift(t *testing.T) {
	e := endpoint{Node: "n", Pod: testPod(), ContainerID: "c", IfName: "eth0", HostIfName: "cali1", MAC: "aa:bb:cc:00:11:22",
		IP: netip.MustParseAddr("10.65.0.9")}
	want := buildWEP(e)
	if d := wepDrift(want.DeepCopy(), want); d != "" {
		t.Fatalf("drift of a copy: %s", d)
	}
	have := want.DeepCopy()
	have.Spec.IPNetworks = []string{"10.65.0.10/32"}
	delete(have.Labels, "app")
	d := wepDrift(have, want)
	if !strings.Contains(d, "spec.ipNetworks") || !strings.Contains(d, "label app") {
		t.Fatalf("drift = %q", d)
	}
}

func TestParseIPAMAnnotations(t *testing.T) {
	got, err := parseIPAMAnnotations(map[string]string{AnnotationIPAddrs: `["10.65.0.9"]`})
	if err != nil || got.IP != netip.MustParseAddr("10.65.0.9") || len(got.Pools) != 0 {
		t.Fatalf("ipAddrs: %+v %v", got, err)
	}
	got, err = parseIPAMAnnotations(map[string]string{AnnotationIPv4Pools: `["pool-a", "10.66.0.0/16"]`})
	if err != nil || !reflect.DeepEqual(got.Pools, []string{"pool-a", "10.66.0.0/16"}) || got.IP.IsValid() {
		t.Fatalf("ipv4pools: %+v %v", got, err)
	}
	got, err = parseIPAMAnnotations(map[string]string{"other": "x"})
	if err != nil || got.IP.IsValid() || got.Pools != nil {
		t.Fatalf("none: %+v %v", got, err)
	}
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{AnnotationIPAddrs: `10.65.0.9`}, "want a JSON list"},
		{map[string]string{AnnotationIPAddrs: `["10.65.0.9","10.65.0.10"]`}, "exactly one"},
		{map[string]string{AnnotationIPAddrs: `[]`}, "exactly one"},
		{map[string]string{AnnotationIPAddrs: `["ten"]`}, `"ten" is not an IP address`},
		{map[string]string{AnnotationIPAddrs: `["fd00::1"]`}, "not an IPv4 address"},
		{map[string]string{AnnotationIPv4Pools: `pool-a`}, "JSON list of IPPool names"},
		{map[string]string{AnnotationIPv4Pools: `["10.0.0.0/33"]`}, "not a CIDR"},
		{map[string]string{AnnotationIPv4Pools: `[""]`}, "empty pool name"},
		{map[string]string{AnnotationIPAddrs: `["10.65.0.9"]`, AnnotationIPv4Pools: `["p"]`}, "cannot be combined"},
	} {
		_, err := parseIPAMAnnotations(tc.ann)
		if err == nil {
			t.Errorf("%v: no error", tc.ann)
			continue
		}
		ce := CNIError(err)
		if ce.Code != CodeBadAnnotation || !strings.Contains(ce.Msg, "tabby.dev/") || !strings.Contains(ce.Details, tc.want) {
			t.Errorf("%v: got %d %q %q, want code 105 mentioning %q", tc.ann, ce.Code, ce.Msg, ce.Details, tc.want)
		}
	}
}
