package policy

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func goldenInputs() map[string]*Input {
	kube := basicInput()
	kube.Endpoints[1].NamedPorts = []NamedPort{{Name: "pg", Proto: ProtoTCP, Port: 5432}}
	kube.KubePolicies = []networkingv1.NetworkPolicy{
		knp("x", "db", sel("app", "db"), nil, []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
				Ports: []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromString("pg"))}},
			{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24"}}}},
				Ports: []networkingv1.NetworkPolicyPort{kport(udp, intstr.FromInt32(30000), 30100)}},
		}, nil),
		knp("x", "web-egress", sel("app", "web"), nil, nil, []networkingv1.NetworkPolicyEgressRule{
			{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}}},
			{Ports: []networkingv1.NetworkPolicyPort{kport(udp, intstr.FromInt32(53))}},
		}),
	}

	tiers := basicInput()
	tiers.GlobalNetworkSets = []v1.GlobalNetworkSet{{ObjectMeta: metav1.ObjectMeta{Name: "partners",
		Labels: map[string]string{"role": "partner"}}, Spec: v1.NetworkSetSpec{Nets: []string{"198.51.100.0/24"}}}}
	tiers.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("a-pass-ssh", order(5), "all()", []v1.Rule{{Action: v1.ActionPass, Protocol: proto("TCP"),
			Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(22)}}}}, nil),
		gnp("b-deny-partners", order(10), "app == 'db'", []v1.Rule{{Action: v1.ActionDeny,
			Source: v1.EntityRule{Selector: "role == 'partner'"}}}, nil),
		gnp("c-allow-web", order(20), "app == 'db'", []v1.Rule{{Action: v1.ActionAllow, Protocol: proto("TCP"),
			Source: v1.EntityRule{Selector: "app == 'web'"}}}, nil),
	}

	egress := basicInput()
	egress.Endpoints[2].NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: 8080}}
	egress.Endpoints[3].NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: 9090}}
	egress.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "named", sel("app", "web"), egressOnly, nil,
		[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel()}},
			Ports: []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromString("http"))}}})}
	return map[string]*Input{"kube": kube, "tiers": tiers, "egress-named-ports": egress}
}

func TestGolden(t *testing.T) {
	for name, in := range goldenInputs() {
		t.Run(name, func(t *testing.T) {
			c, _ := compileOK(t, in)
			got := c.Dump()
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}
