package felix

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/policy"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Errors of ExplainPolicy and SubscribeDrops.
var (
	// ErrPolicyDisabled: felix runs without Config.Policy.
	ErrPolicyDisabled = errors.New("network policy is not enabled on this node")
	// ErrPolicyNotReady: the datapath is not loaded or no policy was compiled yet.
	ErrPolicyNotReady = errors.New("the policy datapath is not programmed yet")
	// ErrBadRequest: a request felix cannot read (a bad address, port or protocol).
	ErrBadRequest = errors.New("bad request")
	// ErrUnknownEndpoint: no such endpoint, or not one of this node where one must be.
	ErrUnknownEndpoint = errors.New("unknown endpoint")
)

// ExplainRequest asks what the datapath does with a new flow to a local endpoint.
type ExplainRequest struct {
	// From is the source: an endpoint "namespace/name" (WorkloadEndpoint or pod name)
	// or an IPv4 address.
	From string
	// To is a local endpoint "namespace/name".
	To string
	// Protocol is TCP, UDP, SCTP or ICMP (or its number); Port the destination port.
	Protocol string
	Port     uint16
}

// ExplainRule names a policy rule: the source of a datapath rule id.
type ExplainRule struct {
	ID        uint32 `json:"id"` // the datapath's rule id (compiled rule index + 1)
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Index     int    `json:"index"`
	Action    string `json:"action"`
}

func (r *ExplainRule) String() string {
	n := r.Name
	if r.Namespace != "" {
		n = r.Namespace + "/" + r.Name
	}
	return fmt.Sprintf("%s %s %s rule %d (%s)", r.Kind, n, r.Direction, r.Index, r.Action)
}

// ExplainStep is what one program decided.
type ExplainStep struct {
	// Direction is ingress (the destination's program) or egress (the source's).
	Direction string `json:"direction"`
	Endpoint  string `json:"endpoint"`
	Interface string `json:"interface"`
	Allowed   bool   `json:"allowed"`
	// Stage is the program's deciding step: policy, default, spoof, no-endpoint,
	// malformed or pass-through.
	Stage     string       `json:"stage"`
	RuleID    uint32       `json:"ruleID"`
	PeerClass uint32       `json:"peerClass"`
	Rule      *ExplainRule `json:"rule,omitempty"`
	// SelectedBy names the policies selecting the endpoint in this direction
	// ("Kind namespace/name"), for a default deny.
	SelectedBy []string `json:"selectedBy,omitempty"`
	// Reason is a sentence for humans.
	Reason string `json:"reason"`
}

// ExplainResult is the answer of ExplainPolicy.
type ExplainResult struct {
	Allowed  bool         `json:"allowed"`
	From     string       `json:"from"` // endpoint key, or "" for a plain address
	FromIP   string       `json:"fromIP"`
	To       string       `json:"to"`
	ToIP     string       `json:"toIP"`
	Protocol string       `json:"protocol"`
	Port     uint16       `json:"port"`
	Egress   *ExplainStep `json:"egress,omitempty"` // nil: the source is no local endpoint
	Ingress  ExplainStep  `json:"ingress"`
	Notes    []string     `json:"notes,omitempty"`
}

// DropEvent is one packet the datapath dropped, or (Log) one a Log rule matched,
// named in policy terms.
type DropEvent struct {
	Time      time.Time `json:"time"`
	Endpoint  string    `json:"endpoint"` // the local endpoint whose program dropped it
	Interface string    `json:"interface"`
	Direction string    `json:"direction"`
	// Peer is the other side's address and, when known, endpoint.
	Peer         string       `json:"peer"`
	PeerEndpoint string       `json:"peerEndpoint,omitempty"`
	Src          string       `json:"src"`
	Dst          string       `json:"dst"`
	Protocol     string       `json:"protocol"`
	SrcPort      uint16       `json:"srcPort"`
	DstPort      uint16       `json:"dstPort"`
	Reason       string       `json:"reason"`
	RuleID       uint32       `json:"ruleID"`
	Rule         *ExplainRule `json:"rule,omitempty"`
	// Log: not a drop but the report of a Log rule (Rule) matching a new flow's
	// packet; Reason is "log". A packet denied after it also has its drop event.
	Log bool `json:"log,omitempty"`
}

// explainSnapshot is the enforcer's state as explain and the drop stream read it,
// published by the apply goroutine after every apply; never modified once published.
type explainSnapshot struct {
	dp      *ebpf.Datapath
	comp    *policy.Compiled
	in      *policy.Input  // what comp was compiled from (read only)
	ifindex map[string]int // local endpoint key -> ifindex the programs are on
	key     map[int]string // ifindex -> local endpoint key
	iface   map[int]string // ifindex -> interface name
	stale   string         // why the maps may not hold comp ("" when they do)
}

// explainHub holds a Felix's snapshot and fans drop events out to subscribers from
// the one ring buffer reader (a ring buffer has one consumer).
type explainHub struct {
	mu     sync.Mutex
	snap   *explainSnapshot
	subs   map[chan DropEvent]struct{}
	reader *ebpf.DropReader
}

func (f *Felix) hub() *explainHub { return f.explain }

// publishExplain runs on the apply goroutine at the end of every enforcer apply of b.
func (e *enforcer) publishExplain(b policyBatch) {
	if e.dp == nil || e.comp == nil {
		return
	}
	h := e.f.hub()
	h.mu.Lock()
	var in *policy.Input
	if h.snap != nil {
		in = h.snap.in
	}
	h.mu.Unlock()
	if b.in != nil && e.cErr == nil {
		in = b.in // what e.comp was compiled from
	}
	s := &explainSnapshot{dp: e.dp, comp: e.comp, in: in, ifindex: make(map[string]int, len(e.attached)),
		key: make(map[int]string, len(e.attached)), iface: map[int]string{}}
	for idx, key := range e.attached {
		s.ifindex[key], s.key[idx] = idx, key
	}
	for _, le := range e.f.localEndpointsOf(s.ifindex) {
		s.iface[s.ifindex[le.key]] = le.iface
	}
	switch {
	case e.writeErr != nil:
		s.stale = "the last policy map write failed: " + e.writeErr.Error()
	case e.cErr != nil:
		s.stale = "the current policy does not compile; the last good one is enforced"
	}
	h.mu.Lock()
	h.snap = s
	h.mu.Unlock()
}

// localEndpointsOf returns the interface names of the local endpoints in keys, from
// the watched WorkloadEndpoints.
func (f *Felix) localEndpointsOf(keys map[string]int) []localEndpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []localEndpoint
	for k := range keys {
		if o, ok := f.pol.objs["WorkloadEndpoint"][k]; ok {
			if w, ok := o.(*v1.WorkloadEndpoint); ok {
				out = append(out, localEndpoint{key: k, iface: w.Spec.InterfaceName})
			}
		}
	}
	return out
}

func (f *Felix) snapshot() (*explainSnapshot, error) {
	if f.pol == nil {
		return nil, ErrPolicyDisabled
	}
	h := f.hub()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snap == nil {
		return nil, ErrPolicyNotReady
	}
	return h.snap, nil
}

// resolve finds an endpoint by "namespace/name" (WorkloadEndpoint name, else pod
// name) in the compiled policy.
func (f *Felix) resolve(s *explainSnapshot, name string) (*policy.EndpointTables, error) {
	for i := range s.comp.Endpoints {
		if s.comp.Endpoints[i].Key == name {
			return &s.comp.Endpoints[i], nil
		}
	}
	ns, pod, ok := strings.Cut(name, "/")
	if !ok || ns == "" || pod == "" {
		return nil, fmt.Errorf("%q: want namespace/name or an IPv4 address: %w", name, ErrBadRequest)
	}
	var keys []string
	f.mu.Lock()
	for k, o := range f.pol.objs["WorkloadEndpoint"] {
		if w, ok := o.(*v1.WorkloadEndpoint); ok && w.Namespace == ns && w.Spec.Workload == pod {
			keys = append(keys, k)
		}
	}
	f.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		for i := range s.comp.Endpoints {
			if s.comp.Endpoints[i].Key == k {
				return &s.comp.Endpoints[i], nil
			}
		}
	}
	return nil, fmt.Errorf("endpoint %s: %w", name, ErrUnknownEndpoint)
}

func firstIPv4(t *policy.EndpointTables) (netip.Addr, bool) {
	for _, a := range t.IPs {
		if a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// parseProto reads a protocol the explain frame can carry.
func parseProto(s string) (uint8, string, error) {
	if s == "" {
		s = "TCP"
	}
	n, err := v1.ProtocolNumber(intstr.FromString(s))
	if err != nil {
		return 0, "", fmt.Errorf("protocol %q: %w: %w", s, err, ErrBadRequest)
	}
	switch uint8(n) {
	case policy.ProtoTCP, policy.ProtoUDP, policy.ProtoSCTP, policy.ProtoICMP:
		return uint8(n), protoName(uint8(n)), nil
	}
	return 0, "", fmt.Errorf("protocol %q: explain handles TCP, UDP, SCTP and ICMP: %w", s, ErrBadRequest)
}

func protoName(p uint8) string {
	switch p {
	case policy.ProtoTCP:
		return "TCP"
	case policy.ProtoUDP:
		return "UDP"
	case policy.ProtoSCTP:
		return "SCTP"
	case policy.ProtoICMP:
		return "ICMP"
	}
	return strconv.Itoa(int(p))
}

// ExplainPolicy runs the programs attached on this node, in their side-effect-free
// explain mode, on a synthetic IPv4 packet opening a flow from req.From to req.To: the
// destination's ingress program and, when the source is a local endpoint too, the
// source's egress program. Each verdict is mapped back to the policy rule (or the
// endpoint default) that decided it.
func (f *Felix) ExplainPolicy(ctx context.Context, req ExplainRequest) (*ExplainResult, error) {
	s, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	proto, pname, err := parseProto(req.Protocol)
	if err != nil {
		return nil, err
	}
	port := req.Port
	if proto == policy.ProtoICMP {
		port = 0
	} else if port == 0 {
		return nil, fmt.Errorf("%s needs a destination port: %w", pname, ErrBadRequest)
	}
	to, err := f.resolve(s, req.To)
	if err != nil {
		return nil, err
	}
	toIdx, ok := s.ifindex[to.Key]
	if !ok {
		return nil, fmt.Errorf("endpoint %s is not enforced on this node (run explain on the node of the destination): %w",
			to.Key, ErrUnknownEndpoint)
	}
	dst, ok := firstIPv4(to)
	if !ok {
		return nil, fmt.Errorf("endpoint %s has no IPv4 address: %w", to.Key, ErrUnknownEndpoint)
	}
	res := &ExplainResult{To: to.Key, ToIP: dst.String(), Protocol: pname, Port: port}
	var from *policy.EndpointTables
	src, perr := netip.ParseAddr(req.From)
	if perr == nil {
		src = src.Unmap()
		if !src.Is4() {
			return nil, fmt.Errorf("source %s: only IPv4: %w", req.From, ErrBadRequest)
		}
		from = s.endpointByIP(src)
	} else {
		if from, err = f.resolve(s, req.From); err != nil {
			return nil, err
		}
		if src, ok = firstIPv4(from); !ok {
			return nil, fmt.Errorf("endpoint %s has no IPv4 address: %w", from.Key, ErrUnknownEndpoint)
		}
	}
	res.FromIP = src.String()
	fromIdx := 0
	if from != nil {
		res.From = from.Key
		fromIdx = s.ifindex[from.Key]
	}
	if s.stale != "" {
		res.Notes = append(res.Notes, s.stale)
	}

	var runErr error
	run := func() {
		if fromIdx > 0 {
			mac := net.HardwareAddr(nil)
			if ep, err := s.dp.LookupEndpoint(fromIdx); err == nil {
				mac = ep.MAC
			}
			st, err := f.explainStep(s, ebpf.Egress, fromIdx, from, buildFrame(mac, src, dst, proto, port))
			if err != nil {
				runErr = err
				return
			}
			res.Egress = &st
		}
		st, err := f.explainStep(s, ebpf.Ingress, toIdx, to, buildFrame(nil, src, dst, proto, port))
		if err != nil {
			runErr = err
			return
		}
		res.Ingress = st
	}
	if err := f.inNodeNS(ctx, run); err != nil {
		return nil, err
	}
	if runErr != nil {
		return nil, runErr
	}
	switch {
	case from == nil:
		res.Notes = append(res.Notes, "the source is no endpoint: only the destination's ingress applies")
	case fromIdx == 0:
		res.Notes = append(res.Notes, "the source "+from.Key+" is not on this node: its egress policy is enforced on its own node")
	}
	res.Allowed = res.Ingress.Allowed && (res.Egress == nil || res.Egress.Allowed)
	return res, nil
}

// endpointByIP finds the endpoint owning a, a local one first (an address may also
// be claimed by a stale endpoint of another node).
func (s *explainSnapshot) endpointByIP(a netip.Addr) *policy.EndpointTables {
	var found *policy.EndpointTables
	for i := range s.comp.Endpoints {
		t := &s.comp.Endpoints[i]
		if !slicesContains(t.IPs, a) {
			continue
		}
		if _, local := s.ifindex[t.Key]; local {
			return t
		}
		if found == nil {
			found = t
		}
	}
	return found
}

func slicesContains(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// inNodeNS runs fn in the node's network namespace (Config.NetNSPath), where the
// interfaces' indexes mean what the programs saw.
func (f *Felix) inNodeNS(ctx context.Context, fn func()) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	if f.cfg.NetNSPath == "" {
		fn()
		return nil
	}
	t, err := dataplane.NewNSThread(f.cfg.NetNSPath)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	defer t.Close()
	t.Do(fn)
	return nil
}

// explainStep runs one program in explain mode and names what decided.
func (f *Felix) explainStep(s *explainSnapshot, dir ebpf.Direction, idx int, t *policy.EndpointTables,
	frame []byte) (ExplainStep, error) {
	ex, err := s.dp.Explain(dir, idx, frame)
	if err != nil {
		return ExplainStep{}, fmt.Errorf("explain %s of %s: %w", dir, t.Key, err)
	}
	st := ExplainStep{Direction: dir.String(), Endpoint: t.Key, Interface: s.iface[idx],
		Allowed: ex.Result == ebpf.Pass, Stage: ex.Stage.String(), RuleID: ex.RuleID, PeerClass: ex.PeerClass}
	verdict := "deny"
	if st.Allowed {
		verdict = "allow"
	}
	switch ex.Stage {
	case ebpf.StagePolicy:
		st.Rule = ruleOf(s.comp, ex.RuleID)
		if st.Rule == nil {
			st.Reason = fmt.Sprintf("%s: rule id %d, unknown to the compiled policy", verdict, ex.RuleID)
		} else if st.Rule.Action == string(v1.ActionPass) {
			st.Reason = "pass: no later tier decides, the profile allows"
		} else {
			st.Reason = strings.ToLower(st.Rule.Action) + ": rule matched"
		}
	case ebpf.StageDefault:
		dt := &t.Ingress
		if dir == ebpf.Egress {
			dt = &t.Egress
		}
		if dt.Selected {
			st.Reason = "default " + verdict + ": endpoint selected, no rule matched"
			st.SelectedBy = selectedBy(s.in, t.Key, dir)
		} else {
			st.Reason = "default " + verdict + ": no policy selects the endpoint"
		}
	case ebpf.StageDHCP:
		st.Reason = "allow: DHCP between the workload and the host, never blocked by policy"
	case ebpf.StageSpoof:
		st.Reason = "deny: the source address or MAC is not the endpoint's"
	case ebpf.StageNoEndpoint:
		st.Reason = "deny: the program is attached but the endpoint is not configured"
	case ebpf.StageMalformed:
		st.Reason = "deny: malformed packet"
	default:
		st.Reason = verdict + ": not IPv4, passed untouched"
	}
	return st, nil
}

// ruleOf maps a datapath rule id back to its policy rule (nil for 0 or unknown).
func ruleOf(c *policy.Compiled, id uint32) *ExplainRule {
	if c == nil || id == 0 || int(id) > len(c.Rules) {
		return nil
	}
	ref := c.Rules[id-1]
	r := &ExplainRule{ID: id, Direction: ref.Direction.String(), Index: ref.Index, Action: string(ref.Action)}
	short, name, _ := strings.Cut(ref.Policy, " ")
	switch short {
	case "knp":
		r.Kind = "K8sNetworkPolicy"
	case "np":
		r.Kind = "NetworkPolicy"
	case "gnp":
		r.Kind = "GlobalNetworkPolicy"
	default:
		r.Kind = short
	}
	if ns, n, ok := strings.Cut(name, "/"); ok {
		r.Namespace, r.Name = ns, n
	} else {
		r.Name = name
	}
	return r
}

// buildFrame is an Ethernet + IPv4 + L4 header opening a flow (a TCP SYN, a UDP or
// SCTP header, an ICMP echo request); checksums are zero (the datapath checks none).
func buildFrame(srcMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, port uint16) []byte {
	b := make([]byte, 14, 14+20+20)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})
	if len(srcMAC) == 6 {
		copy(b[6:12], srcMAC)
	} else {
		copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x01})
	}
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	var l4 []byte
	switch proto {
	case policy.ProtoTCP:
		l4 = make([]byte, 20)
		l4[12], l4[13] = 5<<4, 0x02 // SYN
	case policy.ProtoUDP:
		l4 = make([]byte, 8)
	case policy.ProtoSCTP:
		l4 = make([]byte, 12)
	default: // ICMP echo request
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	}
	if proto != policy.ProtoICMP {
		binary.BigEndian.PutUint16(l4[0:], explainSrcPort)
		binary.BigEndian.PutUint16(l4[2:], port)
	}
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return append(append(b, ip...), l4...)
}

// explainSrcPort is the synthetic flow's source port (policy does not look at it).
const explainSrcPort = 40000

// dropBuffer is how many events a slow subscriber may lag behind before it loses some.
const dropBuffer = 256

// SubscribeDrops streams the datapath's drop events, named in policy terms, until ctx
// ends (the channel is then closed). Felix reads the ring buffer once, while anyone
// subscribes, and fans the events out; a subscriber that falls dropBuffer events
// behind loses the newest ones.
func (f *Felix) SubscribeDrops(ctx context.Context) (<-chan DropEvent, error) {
	if _, err := f.snapshot(); err != nil {
		return nil, err
	}
	h := f.hub()
	ch := make(chan DropEvent, dropBuffer)
	h.mu.Lock()
	if h.reader == nil {
		r, err := h.snap.dp.NewDropReader()
		if err != nil {
			h.mu.Unlock()
			return nil, fmt.Errorf("subscribe to drops: %w", err)
		}
		h.reader = r
		go h.read(r)
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	go func() {
		<-ctx.Done()
		h.mu.Lock()
		delete(h.subs, ch)
		close(ch)
		if len(h.subs) == 0 && h.reader != nil {
			_ = h.reader.Close() // nobody listens: leave the ring to fill
			h.reader = nil
		}
		h.mu.Unlock()
	}()
	return ch, nil
}

// read consumes the ring buffer until r is closed.
func (h *explainHub) read(r *ebpf.DropReader) {
	for {
		ev, err := r.Read()
		if err != nil {
			if errors.Is(err, ebpf.ErrClosed) {
				return
			}
			continue // a bad record
		}
		h.mu.Lock()
		if h.reader != r {
			h.mu.Unlock()
			return
		}
		out := dropEvent(h.snap, ev, time.Now())
		for ch := range h.subs {
			select {
			case ch <- out:
			default:
			}
		}
		h.mu.Unlock()
	}
}

// dropEvent names a drop event with the snapshot's endpoints and rules.
func dropEvent(s *explainSnapshot, ev ebpf.DropEvent, now time.Time) DropEvent {
	out := DropEvent{Time: now, Endpoint: s.key[ev.Ifindex], Interface: s.iface[ev.Ifindex],
		Direction: ev.Direction.String(), Src: ev.Src.String(), Dst: ev.Dst.String(),
		Protocol: protoName(ev.Proto), SrcPort: ev.SrcPort, DstPort: ev.DstPort, Reason: ev.Reason.String(),
		RuleID: ev.RuleID, Rule: ruleOf(s.comp, ev.RuleID), Log: ev.IsLog()}
	if out.Interface == "" {
		out.Interface = "if" + strconv.Itoa(ev.Ifindex)
	}
	peer := ev.Src
	if ev.Direction == ebpf.Egress {
		peer = ev.Dst
	}
	out.Peer = peer.String()
	if t := s.endpointByIP(peer); t != nil {
		out.PeerEndpoint = t.Key
	}
	return out
}

// selectedBy lists the policies of in that select the endpoint key in dir, by
// compiling each policy alone against that endpoint (only for a default deny, so the
// cost is paid on demand).
func selectedBy(in *policy.Input, key string, dir ebpf.Direction) []string {
	if in == nil {
		return nil
	}
	var ep *policy.Endpoint
	for i := range in.Endpoints {
		if in.Endpoints[i].Key() == key {
			ep = &in.Endpoints[i]
			break
		}
	}
	if ep == nil {
		return nil
	}
	base := policy.Input{Namespaces: in.Namespaces, ServiceAccounts: in.ServiceAccounts,
		Endpoints: []policy.Endpoint{*ep}}
	var out []string
	check := func(name string, one policy.Input) {
		c, err := policy.Compile(&one)
		if err != nil || len(c.Endpoints) != 1 {
			return
		}
		dt := c.Endpoints[0].Ingress
		if dir == ebpf.Egress {
			dt = c.Endpoints[0].Egress
		}
		if dt.Selected {
			out = append(out, name)
		}
	}
	for i := range in.KubePolicies {
		one := base
		one.KubePolicies = in.KubePolicies[i : i+1]
		check("K8sNetworkPolicy "+in.KubePolicies[i].Namespace+"/"+in.KubePolicies[i].Name, one)
	}
	for i := range in.Policies {
		one := base
		one.Policies = in.Policies[i : i+1]
		check("NetworkPolicy "+in.Policies[i].Namespace+"/"+in.Policies[i].Name, one)
	}
	for i := range in.GlobalPolicies {
		one := base
		one.GlobalPolicies = in.GlobalPolicies[i : i+1]
		check("GlobalNetworkPolicy "+in.GlobalPolicies[i].Name, one)
	}
	sort.Strings(out)
	return out
}
