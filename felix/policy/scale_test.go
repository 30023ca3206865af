package policy

import (
	"fmt"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// scaleInput has 20 pods and one policy of n ingress rules on every pod: rules alternate
// between a source CIDR (a distinct /24 each) and a source selector, each with its own
// TCP port, and actions alternate between Allow and Deny.
func scaleInput(n int) *Input {
	in := &Input{Namespaces: namespaces("x")}
	for i := range 20 {
		in.Endpoints = append(in.Endpoints, pod("x", fmt.Sprintf("p%d", i), fmt.Sprintf("10.255.0.%d", i+1),
			"svc", fmt.Sprintf("s%d", i%7)))
	}
	rules := make([]v1.Rule, n)
	for i := range rules {
		r := v1.Rule{Action: v1.ActionAllow, Protocol: proto("TCP"),
			Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(int32(1000 + i))}}}
		if i%3 == 2 {
			r.Action = v1.ActionDeny
		}
		if i%2 == 0 {
			r.Source.Nets = []string{fmt.Sprintf("10.%d.%d.0/24", i/256%250, i%256)}
		} else {
			r.Source.Selector = fmt.Sprintf("svc == 's%d'", i%7)
		}
		rules[i] = r
	}
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{gnp("big", order(1), "all()", rules, nil)}
	return in
}

// TestScaling: the number of map lookups per verdict does not depend on the number of
// rules; compile time is only reported.
func TestScaling(t *testing.T) {
	lookups := map[int]int{}
	for _, n := range []int{10, 10000} {
		start := time.Now()
		c, err := Compile(scaleInput(n))
		if err != nil {
			t.Fatal(err)
		}
		compileTime := time.Since(start)
		ev := NewEvaluator(c)
		entries := 0
		for _, e := range c.Endpoints {
			entries += len(e.Ingress.Entries) + len(e.Egress.Entries)
		}
		probes := 0
		for i := range 200 {
			src := addr(fmt.Sprintf("10.%d.%d.9", i/256%250, i%256))
			if i%4 == 1 {
				src = addr(fmt.Sprintf("10.255.0.%d", i%20+1))
			}
			dst := addr(fmt.Sprintf("10.255.0.%d", i%20+1))
			r := ev.Verdict(src, dst, ProtoTCP, uint16(1000+i*n/200))
			// Egress at a pod source is not selected (1 lookup); ingress is (3 lookups).
			want := 3
			if i%4 == 1 {
				want = 4
			}
			if r.Lookups() != want {
				t.Fatalf("%d rules: %s -> %s: %d lookups, want %d", n, src, dst, r.Lookups(), want)
			}
			if r.Ingress.Lookups != 3 {
				t.Fatalf("%d rules: ingress took %d lookups, want 3", n, r.Ingress.Lookups)
			}
			lookups[n] += r.Ingress.Lookups
			probes++
		}
		t.Logf("%d rules: compile %v, %d classes, %d ipcache entries, %d policy entries, %.1f lookups per ingress verdict",
			n, compileTime, len(c.Classes), len(c.IPCache), entries, float64(lookups[n])/float64(probes))
	}
	if lookups[10] != lookups[10000] {
		t.Errorf("lookups differ: 10 rules %d, 10000 rules %d", lookups[10], lookups[10000])
	}
}
