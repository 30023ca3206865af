package v1

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateRejects feeds one bad object per case through Decode, Default and
// Validate, and checks the error names the field and the bad value.
func TestValidateRejects(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		field string
		value string
	}{
		{"unmasked CIDR", pool("cidr: 10.0.0.1/24"), "spec.cidr", "10.0.0.1/24"},
		{"malformed CIDR", pool("cidr: 10.0.0.0/33"), "spec.cidr", "10.0.0.0/33"},
		{"not a CIDR", pool("cidr: banana"), "spec.cidr", "banana"},
		{"block size too small", pool("cidr: 10.0.0.0/16\nblockSize: 19"), "spec.blockSize", "19"},
		{"block size too large", pool("cidr: 10.0.0.0/16\nblockSize: 33"), "spec.blockSize", "33"},
		{"block larger than pool", pool("cidr: 10.0.0.0/28\nblockSize: 26"), "spec.blockSize", "26"},
		{"bad node selector", pool("cidr: 10.0.0.0/16\nnodeSelector: \"rack ==\""), "spec.nodeSelector", "rack =="},
		{"bad allowed use", pool("cidr: 10.0.0.0/16\nallowedUses: [Pods]"), "spec.allowedUses[0]", "Pods"},
		{"ASN zero", peer("peerIP: 10.0.0.1\nasNumber: 0"), "spec.asNumber", ""},
		{"ASN too large", peer("peerIP: 10.0.0.1\nasNumber: 4294967296"), "spec.asNumber", "4294967296"},
		{"ASN negative", peer("peerIP: 10.0.0.1\nasNumber: -1"), "spec.asNumber", "-1"},
		{"local ASN zero", peer("peerIP: 10.0.0.1\nasNumber: 65001\nlocalASNumber: 0"), "spec.localASNumber", "0"},
		{"bad peer IP", peer("peerIP: 10.0.0.300\nasNumber: 65001"), "spec.peerIP", "10.0.0.300"},
		{"peer port zero", peer("peerIP: 10.0.0.1:0\nasNumber: 65001"), "spec.peerIP", "10.0.0.1:0"},
		{"peerIP and selector", peer("peerIP: 10.0.0.1\npeerSelector: all()\nasNumber: 65001"), "spec.peerSelector", "all()"},
		{"hold time short", peer("peerIP: 10.0.0.1\nasNumber: 65001\nholdTime: 2s"), "spec.holdTime", "2s"},
		{"password without key", peer("peerIP: 10.0.0.1\nasNumber: 65001\npassword:\n  secretKeyRef:\n    name: s"), "spec.password.secretKeyRef.key", ""},
		{"bad community", bgpconfig("communities:\n- name: a\n  value: \"70000:1\""), "spec.communities[0].value", "70000:1"},
		{"bad bgp config name", "apiVersion: tabby.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: cluster\nspec: {}\n", "metadata.name", "cluster"},
		{"port range reversed", policy("ingress:\n- action: Allow\n  protocol: TCP\n  destination:\n    ports: [\"90:80\"]"), "spec.ingress[0].destination.ports[0]", "90:80"},
		{"port too large", policy("ingress:\n- action: Allow\n  protocol: TCP\n  destination:\n    ports: [70000]"), "spec.ingress[0].destination.ports[0]", "70000"},
		{"ports without protocol", policy("ingress:\n- action: Allow\n  destination:\n    ports: [80]"), "spec.ingress[0].destination.ports", ""},
		{"bad action", policy("ingress:\n- action: Drop"), "spec.ingress[0].action", "Drop"},
		{"bad protocol", policy("ingress:\n- action: Allow\n  protocol: TCPP"), "spec.ingress[0].protocol", "TCPP"},
		{"icmp without protocol", policy("ingress:\n- action: Allow\n  icmp:\n    type: 8"), "spec.ingress[0].icmp", ""},
		{"bad rule selector", policy("ingress:\n- action: Allow\n  source:\n    selector: \"app in {\""), "spec.ingress[0].source.selector", "app in {"},
		{"bad policy selector", policy("selector: \"has(\""), "spec.selector", "has("},
		{"unmasked rule net", policy("egress:\n- action: Allow\n  destination:\n    nets: [10.1.2.3/8]"), "spec.egress[0].destination.nets[0]", "10.1.2.3/8"},
		{"wep bad ip", wep("ipNetworks: [10.0.0.0/24]"), "spec.ipNetworks[0]", "10.0.0.0/24"},
		{"wep long iface", wep("interfaceName: cali0123456789abcdef"), "spec.interfaceName", "cali0123456789abcdef"},
		{"wep bad mac", wep("mac: zz:zz"), "spec.mac", "zz:zz"},
		{"unknown field", pool("cidr: 10.0.0.0/16\nblocksize: 26"), "spec.blocksize", ""},
		{"unknown top field", "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata:\n  name: p\nspek: {}\n", "spek", ""},
		{"wrong type", pool("cidr: 10.0.0.0/16\nblockSize: big"), "spec.blockSize", "string"},
		{"ipam config name", "apiVersion: tabby.dev/v1\nkind: IPAMConfiguration\nmetadata:\n  name: x\nspec:\n  strictAffinity: true\n", "metadata.name", "x"},
		{"bad name", "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata:\n  name: Bad_Name\nspec:\n  cidr: 10.0.0.0/16\n", "metadata.name", "Bad_Name"},
		{"filter min>max", "apiVersion: tabby.dev/v1\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n  importV4:\n  - cidr: 10.0.0.0/8\n    matchOperator: In\n    action: Accept\n    prefixLength: {min: 28, max: 24}\n", "spec.importV4[0].prefixLength", "min 28 > max 24"},
		{"node bad rr id", "apiVersion: tabby.dev/v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  bgp:\n    routeReflectorClusterID: x\n", "spec.bgp.routeReflectorClusterID", "x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := decodeDefaultValidate(c.yaml)
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.field) {
				t.Errorf("error does not name field %q: %s", c.field, msg)
			}
			if c.value != "" && !strings.Contains(msg, c.value) {
				t.Errorf("error does not show value %q: %s", c.value, msg)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	good := []string{
		pool("cidr: 10.244.0.0/16"),
		pool("cidr: 10.244.0.0/16\nblockSize: 28\nnodeSelector: rack == 'a' && !has(edge)\nnatOutgoing: true"),
		pool("cidr: fd00:10::/48\nblockSize: 122"),
		peer("peerIP: 10.0.0.1\nasNumber: 65001\nkeepaliveTime: 10s\nholdTime: 30s\nttlSecurity: 1\nmaxPrefixes: 1000\nnextHopMode: Self\npassword:\n  secretKeyRef: {name: bgp, key: pw}"),
		peer("peerIP: \"[fd00::1]:1790\"\nasNumber: 4294967295"),
		peer("peerSelector: has(route-reflector)\nnodeSelector: all()"),
		bgpconfig("asNumber: 64512\nnodeToNodeMeshEnabled: false\ncommunities:\n- {name: c1, value: \"64512:100\"}\nprefixAdvertisements:\n- {cidr: 10.244.0.0/16, communities: [c1, \"1:2:3\"]}"),
		policy("order: 10\nselector: app == 'db'\ntypes: [Ingress, Egress]\ningress:\n- action: Allow\n  protocol: TCP\n  source:\n    selector: app == 'web'\n    nets: [10.0.0.1, 10.1.0.0/16]\n  destination:\n    ports: [80, \"8000:8080\", http]\n- action: Allow\n  protocol: ICMP\n  icmp: {type: 8, code: 0}\negress:\n- action: Pass\n- action: Deny\n  protocol: 17"),
		wep("ipNetworks: [10.244.1.5/32, 10.244.1.6]\nmac: 52:54:00:12:34:56\nports:\n- {name: http, protocol: TCP, port: 80}"),
	}
	for i, y := range good {
		if err := decodeDefaultValidate(y); err != nil {
			t.Errorf("case %d rejected: %v\n%s", i, err, y)
		}
	}
}

func TestDefaults(t *testing.T) {
	objs, err := Decode([]byte(pool("cidr: 10.244.0.0/16")))
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].(*IPPool)
	Default(p)
	if p.Spec.BlockSize != 26 || p.Spec.NodeSelector != "all()" || len(p.Spec.AllowedUses) != 2 {
		t.Errorf("defaults not applied: %+v", p.Spec)
	}
	v6 := &IPPool{Spec: IPPoolSpec{CIDR: "fd00::/48"}}
	Default(v6)
	if v6.Spec.BlockSize != 122 || v6.Kind != "IPPool" || v6.APIVersion != "tabby.dev/v1" {
		t.Errorf("v6 defaults: %+v %+v", v6.Spec, v6.TypeMeta)
	}
	np := &NetworkPolicy{Spec: NetworkPolicySpec{Egress: []Rule{{Action: ActionAllow}}}}
	Default(np)
	if len(np.Spec.Types) != 2 {
		t.Errorf("policy types: %v", np.Spec.Types)
	}
}

func TestValidateAgainstOverlap(t *testing.T) {
	a := &IPPool{Spec: IPPoolSpec{CIDR: "10.0.0.0/16"}}
	a.Name = "a"
	b := &IPPool{Spec: IPPoolSpec{CIDR: "10.0.128.0/17"}}
	b.Name = "b"
	c := &IPPool{Spec: IPPoolSpec{CIDR: "10.1.0.0/16"}}
	c.Name = "c"
	err := ValidateAgainst(b, []Object{a, c})
	if err == nil || !strings.Contains(err.Error(), "spec.cidr") || !strings.Contains(err.Error(), `overlaps IPPool "a"`) {
		t.Fatalf("overlap not reported: %v", err)
	}
	if err := ValidateAgainst(c, []Object{a, b}); err != nil {
		t.Fatalf("disjoint pools rejected: %v", err)
	}
	// An update of a pool is not an overlap with its own old version.
	if err := ValidateAgainst(a, []Object{a}); err != nil {
		t.Fatalf("self overlap: %v", err)
	}
}

func TestDecodeMultiAndList(t *testing.T) {
	in := pool("cidr: 10.0.0.0/16") + "---\n# comment only\n---\n" +
		"apiVersion: tabby.dev/v1\nkind: IPPoolList\nitems:\n- apiVersion: tabby.dev/v1\n  kind: IPPool\n  metadata: {name: b}\n  spec: {cidr: 10.1.0.0/16}\n"
	objs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[1].GetName() != "b" {
		t.Fatalf("got %d objects", len(objs))
	}
	if _, err := Decode([]byte("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\n")); err == nil || !strings.Contains(err.Error(), "tabby.dev/v1") {
		t.Fatalf("foreign apiVersion: %v", err)
	}
	if _, err := Decode([]byte("apiVersion: tabby.dev/v1\nkind: Banana\nmetadata: {name: a}\n")); err == nil || !strings.Contains(err.Error(), "Banana") {
		t.Fatalf("unknown kind: %v", err)
	}
}

func TestLookupResource(t *testing.T) {
	for _, n := range []string{"ippools", "IPPool", "ippool", "pool", "wep", "gnp", "BGPPeers"} {
		if _, ok := LookupResource(n); !ok {
			t.Errorf("%s not found", n)
		}
	}
	if _, ok := LookupResource("pods"); ok {
		t.Error("pods is not a Tabby resource")
	}
}

func decodeDefaultValidate(y string) error {
	objs, err := Decode([]byte(y))
	if err != nil {
		return err
	}
	for _, o := range objs {
		Default(o)
		if err := Validate(o); err != nil {
			return err
		}
	}
	return nil
}

func pool(spec string) string {
	return "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata:\n  name: p1\nspec:\n  " + indent(spec) + "\n"
}

func peer(spec string) string {
	return "apiVersion: tabby.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  " + indent(spec) + "\n"
}

func bgpconfig(spec string) string {
	return "apiVersion: tabby.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  " + indent(spec) + "\n"
}

func policy(spec string) string {
	return "apiVersion: tabby.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: default\nspec:\n  " + indent(spec) + "\n"
}

func wep(spec string) string {
	base := "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata:\n  name: w\n  namespace: default\nspec:\n  orchestrator: pod\n  workload: web\n  node: n1\n"
	if !strings.Contains(spec, "interfaceName") {
		base += "  interfaceName: cali12345678901\n"
	}
	return base + "  " + indent(spec) + "\n"
}

// indent indents every line after the first by two spaces, so multi-line specs nest.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }
