package policy

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/test/probe"
	networkingv1 "k8s.io/api/networking/v1"
)

const casesPath = "../conformance/netpol-cases.jsonl.gz"

// Recorded pod addresses and where the test puts them.
var (
	recordedNet = netip.MustParsePrefix("192.168.1.0/24")
	podNet      = netip.MustParsePrefix("10.78.1.0/24")
)

type casePod struct {
	Namespace, Name, IP string
	Labels              map[string]string
}

type caseCell struct {
	From, To, Key             string
	Ingress, Egress, Combined string
}

// caseStep is one line of the data.
type caseStep struct {
	Case        int
	Step        int
	Description string
	Namespaces  map[string]map[string]string
	Pods        []casePod
	Policies    []networkingv1.NetworkPolicy
	Expected    []caseCell

	// Replayable is false for a step recorded with the inputs of an earlier step of
	// its case but other verdicts: its real inputs are unknown.
	Replayable bool
	// Raw holds the recorded namespaces and pods, to check every step has the same.
	Raw struct{ Namespaces, Pods json.RawMessage }
}

func (s *caseStep) String() string {
	return fmt.Sprintf("case %d step %d (%s)", s.Case, s.Step, s.Description)
}

// loadCases reads every step and marks the ones that cannot be replayed.
func loadCases(path string) ([]*caseStep, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var steps []*caseStep
	seen := map[string]map[string]string{} // a case's recorded inputs -> their verdicts
	for sc.Scan() {
		var st caseStep
		var rec struct{ Namespaces, Pods, Policies json.RawMessage }
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, len(steps)+1, err)
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, len(steps)+1, err)
		}
		st.Raw.Namespaces, st.Raw.Pods = rec.Namespaces, rec.Pods
		in := fmt.Sprintf("%d|%s|%s|%s", st.Case, rec.Namespaces, rec.Pods, rec.Policies)
		exp := map[string]string{}
		for _, c := range st.Expected {
			exp[c.From+" "+c.To+" "+c.Key] = c.Ingress + c.Egress + c.Combined
		}
		st.Replayable = true
		if prev, ok := seen[in]; ok && contradicts(prev, exp) {
			st.Replayable = false
		} else if !ok {
			seen[in] = exp
		}
		steps = append(steps, &st)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("%s: no steps", path)
	}
	return steps, nil
}

// contradicts reports whether two verdict sets disagree on a cell they share.
func contradicts(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; ok && w != v {
			return true
		}
	}
	return false
}

// remapAddr moves a recorded pod address into podNet.
func remapAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pod address %q: %w", s, err)
	}
	if !recordedNet.Contains(a) {
		return netip.Addr{}, fmt.Errorf("pod address %s is outside %s", a, recordedNet)
	}
	b, o := a.As4(), podNet.Addr().As4()
	b[0], b[1], b[2] = o[0], o[1], o[2]
	return netip.AddrFrom4(b), nil
}

// remapCIDR moves a CIDR inside the recorded /24 into podNet; a wider one must contain
// both ranges (0.0.0.0/0) and one outside both stays (0.0.0.0/31). Anything else
// would change which pods it matches, and is an error.
func remapCIDR(s string) (string, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return "", fmt.Errorf("ipBlock %q: %w", s, err)
	}
	switch {
	case p.Bits() >= recordedNet.Bits() && recordedNet.Contains(p.Addr()):
		a, err := remapAddr(p.Addr().String())
		if err != nil {
			return "", err
		}
		return netip.PrefixFrom(a, p.Bits()).String(), nil
	case p.Overlaps(recordedNet) && p.Contains(podNet.Addr()):
		return s, nil
	case p.Overlaps(recordedNet) || p.Overlaps(podNet):
		return "", fmt.Errorf("ipBlock %s: cannot remap %s to %s consistently", s, recordedNet, podNet)
	}
	return s, nil
}

// remapPolicy is a copy of a recorded policy ready to create: ipBlocks remapped,
// server-set metadata dropped.
func remapPolicy(np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	out := &networkingv1.NetworkPolicy{}
	out.Name, out.Namespace = np.Name, np.Namespace
	out.Labels, out.Annotations = np.Labels, np.Annotations
	out.Spec = *np.Spec.DeepCopy()
	remap := func(peers []networkingv1.NetworkPolicyPeer) error {
		for i := range peers {
			b := peers[i].IPBlock
			if b == nil {
				continue
			}
			var err error
			if b.CIDR, err = remapCIDR(b.CIDR); err != nil {
				return err
			}
			for j := range b.Except {
				if b.Except[j], err = remapCIDR(b.Except[j]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for i := range out.Spec.Ingress {
		if err := remap(out.Spec.Ingress[i].From); err != nil {
			return nil, fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
		}
	}
	for i := range out.Spec.Egress {
		if err := remap(out.Spec.Egress[i].To); err != nil {
			return nil, fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
		}
	}
	return out, nil
}

// parseKey reads a cell's "PROTO/port".
func parseKey(key string) (probe.Proto, uint16, error) {
	proto, port, ok := strings.Cut(key, "/")
	if !ok {
		return "", 0, fmt.Errorf("key %q: want PROTO/port", key)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("key %q: %w", key, err)
	}
	switch p := probe.Proto(proto); p {
	case probe.TCP, probe.UDP, probe.SCTP:
		return p, uint16(n), nil
	}
	return "", 0, fmt.Errorf("key %q: unknown protocol", key)
}
