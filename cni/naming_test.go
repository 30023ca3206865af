package cni

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestVethName(t *testing.T) {
	sum := sha1.Sum([]byte("default.web-0"))
	want := "cali" + hex.EncodeToString(sum[:])[:11]
	if got := VethName("default", "web-0"); got != want {
		t.Fatalf("VethName = %q, want %q", got, want)
	}
	if len(want) != 15 {
		t.Fatalf("veth name %q is not 15 characters", want)
	}
	// A known value, so the convention cannot drift: sha1("default.web-0") = 0d77633...
	if got := VethName("default", "web-0"); got != "cali0d7763386da" {
		t.Fatalf("VethName(default, web-0) = %q, want cali0d7763386da", got)
	}
	if VethName("ns", "p1") == VethName("ns", "p2") {
		t.Fatal("two pods share a veth name")
	}
}

func TestWEPName(t *testing.T) {
	if got := WEPName("Node-1", "Web-0", "eth0"); got != "node-1-k8s-web-0-eth0" {
		t.Fatalf("WEPName = %q", got)
	}
	long := strings.Repeat("p", 250)
	a, b := WEPName("node", long+"a", "eth0"), WEPName("node", long+"b", "eth0")
	if len(a) > 253 || len(b) > 253 {
		t.Fatalf("too long: %d, %d", len(a), len(b))
	}
	if a == b {
		t.Fatal("two long names collide")
	}
	for _, n := range []string{a, b, WEPName("node.example.com", strings.Repeat("x.", 126), "eth0")} {
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Fatalf("%q is not a valid object name: %v", n, errs)
		}
	}
}
