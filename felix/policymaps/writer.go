package policymaps

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/felix/policy"
	"go.uber.org/zap"
)

// ErrInvalid is wrapped by Sync errors for input the maps cannot represent (an
// endpoint id the compiled policy does not know, a duplicate ifindex, too many
// addresses, a bad MAC). Nothing is written when Sync fails with it.
var ErrInvalid = errors.New("invalid policy map input")

// DefaultMaxPerTable caps the hash entries of one endpoint and direction.
const DefaultMaxPerTable = 65536

// Endpoint is a workload interface and the compiled endpoint enforcing on it.
type Endpoint struct {
	// Ifindex is the host-side interface index (the tabby_endpoints key).
	Ifindex int
	// ID is the compiled endpoint's id (policy.EndpointTables.ID).
	ID uint32
	// IPv4 are the workload's addresses; IPv6 ones are skipped and counted.
	IPv4 []netip.Addr
	// MAC, if set, must be the source of every frame from the workload.
	MAC net.HardwareAddr
}

// MapStats counts the writes to one map in one Sync.
type MapStats struct {
	Added, Updated, Deleted int
}

// Writes is Added + Updated + Deleted.
func (s MapStats) Writes() int { return s.Added + s.Updated + s.Deleted }

// Stats says what one Sync did.
type Stats struct {
	IPCache   MapStats
	Policy    MapStats
	Endpoints MapStats
	// SkippedIPv6 counts IPv6 ipcache prefixes and endpoint addresses left out.
	SkippedIPv6 int
	// Dumped: the maps were read back from the kernel before diffing (first Sync, or
	// after a failed write).
	Dumped bool
}

// Writes is the total number of map writes.
func (s Stats) Writes() int { return s.IPCache.Writes() + s.Policy.Writes() + s.Endpoints.Writes() }

// endpointValue is a tabby_endpoints value in comparable form.
type endpointValue struct {
	ID                            uint32
	IngressDefault, EgressDefault ebpf.Verdict
	MAC                           [6]byte
	HasMAC                        bool
	N                             int
	Addrs                         [ebpf.MaxEndpointAddrs]netip.Addr
}

func (v endpointValue) toEbpf() ebpf.Endpoint {
	ep := ebpf.Endpoint{ID: v.ID, IngressDefault: v.IngressDefault, EgressDefault: v.EgressDefault,
		Addrs: append([]netip.Addr(nil), v.Addrs[:v.N]...)}
	if v.HasMAC {
		ep.MAC = net.HardwareAddr(v.MAC[:])
	}
	return ep
}

// state is what the three maps hold (or must hold).
type state struct {
	ipcache   map[netip.Prefix]uint32
	policy    map[ebpf.PolicyKey]ebpf.PolicyValue
	endpoints map[int]endpointValue
}

func newState() *state {
	return &state{ipcache: map[netip.Prefix]uint32{}, policy: map[ebpf.PolicyKey]ebpf.PolicyValue{},
		endpoints: map[int]endpointValue{}}
}

// Writer keeps the datapath's policy maps in step with compiled policy. It is safe for
// concurrent use; Syncs are serialized.
type Writer struct {
	// MaxPerTable caps the hash entries of one endpoint and direction (0: no cap); set
	// it before the first Sync.
	MaxPerTable int

	dp  *ebpf.Datapath
	log *zap.Logger

	mu   sync.Mutex
	cur  *state // what the maps hold; nil: unknown, dump before diffing
	caps capacities
}

// New returns a Writer for a loaded datapath. A nil log discards.
func New(dp *ebpf.Datapath, log *zap.Logger) *Writer {
	if log == nil {
		log = zap.NewNop()
	}
	return &Writer{MaxPerTable: DefaultMaxPerTable, dp: dp, log: log}
}

// Sync makes the maps hold exactly c and eps, writing only the difference. A nil c (or
// an empty one with no eps) empties the maps. On a validation error nothing is
// written; on a write error the maps are partly updated and the next Sync re-reads
// them.
func (w *Writer) Sync(c *policy.Compiled, eps []Endpoint) (Stats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var st Stats
	want, err := w.desired(c, eps, &st)
	if err != nil {
		return st, err
	}
	if w.dp == nil {
		return st, fmt.Errorf("no datapath: %w", ErrInvalid)
	}
	if w.cur == nil {
		cur, caps, err := dump(w.dp.PinDir())
		if err != nil {
			return st, err
		}
		w.cur, w.caps, st.Dumped = cur, caps, true
		w.log.Info("read pinned policy maps", zap.Int("ipcache", len(cur.ipcache)),
			zap.Int("policy", len(cur.policy)), zap.Int("endpoints", len(cur.endpoints)))
	}
	if err := w.caps.check(want); err != nil {
		return st, err
	}
	if err := w.apply(want, &st); err != nil {
		w.cur = nil // partly written: read the maps back next time
		return st, err
	}
	w.log.Debug("synced policy maps", zap.Any("ipcache", st.IPCache), zap.Any("policy", st.Policy),
		zap.Any("endpoints", st.Endpoints), zap.Int("skippedIPv6", st.SkippedIPv6), zap.Bool("dumped", st.Dumped))
	return st, nil
}

// Invalidate forgets what the Writer believes the maps hold: the next Sync dumps them.
// Use it when something else may have written them.
func (w *Writer) Invalidate() {
	w.mu.Lock()
	w.cur = nil
	w.mu.Unlock()
}

func toVerdict(v policy.Verdict) ebpf.Verdict {
	if v == policy.Allow {
		return ebpf.Allow
	}
	return ebpf.Deny
}

func toDirection(d policy.Direction) ebpf.Direction {
	if d == policy.Egress {
		return ebpf.Egress
	}
	return ebpf.Ingress
}

// desired translates c and eps into map contents.
func (w *Writer) desired(c *policy.Compiled, eps []Endpoint, st *Stats) (*state, error) {
	s := newState()
	if c == nil {
		c = &policy.Compiled{}
	}
	for _, e := range c.IPCache {
		p := e.Prefix.Masked()
		if !p.IsValid() {
			return nil, fmt.Errorf("ipcache prefix %s: %w", e.Prefix, ErrInvalid)
		}
		if !p.Addr().Is4() {
			st.SkippedIPv6++
			continue
		}
		s.ipcache[p] = e.Class
	}
	hes, err := c.HashEntries(w.MaxPerTable)
	if err != nil {
		return nil, fmt.Errorf("expand policy: %w", err)
	}
	for _, h := range hes {
		k := ebpf.PolicyKey{Endpoint: h.Endpoint, Direction: toDirection(h.Direction), Proto: h.Proto,
			Port: h.Port, Peer: h.Class}
		s.policy[k] = ebpf.PolicyValue{Verdict: toVerdict(h.Decision.Verdict), RuleID: policy.DatapathRuleID(h.Decision),
			LogRuleID: policy.DatapathLogRuleID(h.Decision)}
	}
	tables := make(map[uint32]*policy.EndpointTables, len(c.Endpoints))
	for i := range c.Endpoints {
		tables[c.Endpoints[i].ID] = &c.Endpoints[i]
	}
	for _, ep := range eps {
		t, ok := tables[ep.ID]
		if !ok {
			return nil, fmt.Errorf("endpoint ifindex %d: id %d not in the compiled policy: %w", ep.Ifindex, ep.ID, ErrInvalid)
		}
		if ep.Ifindex <= 0 || ep.Ifindex > 1<<31-1 {
			return nil, fmt.Errorf("endpoint %s: ifindex %d: %w", t.Key, ep.Ifindex, ErrInvalid)
		}
		if _, dup := s.endpoints[ep.Ifindex]; dup {
			return nil, fmt.Errorf("endpoint %s: ifindex %d used twice: %w", t.Key, ep.Ifindex, ErrInvalid)
		}
		v := endpointValue{ID: ep.ID, IngressDefault: toVerdict(t.Ingress.Default.Verdict),
			EgressDefault: toVerdict(t.Egress.Default.Verdict)}
		if len(ep.MAC) != 0 {
			if len(ep.MAC) != 6 {
				return nil, fmt.Errorf("endpoint %s: MAC %s: %w", t.Key, ep.MAC, ErrInvalid)
			}
			copy(v.MAC[:], ep.MAC)
			v.HasMAC = v.MAC != [6]byte{} // the datapath reads a zero MAC as unset
		}
		var v4 []netip.Addr
		for _, a := range ep.IPv4 {
			a = a.Unmap()
			switch {
			case a.Is4():
				if !containsAddr(v4, a) {
					v4 = append(v4, a)
				}
			case a.Is6():
				st.SkippedIPv6++
			default:
				return nil, fmt.Errorf("endpoint %s: invalid address: %w", t.Key, ErrInvalid)
			}
		}
		if len(v4) > ebpf.MaxEndpointAddrs {
			return nil, fmt.Errorf("endpoint %s: %d IPv4 addresses, at most %d: %w", t.Key, len(v4),
				ebpf.MaxEndpointAddrs, ErrInvalid)
		}
		sort.Slice(v4, func(i, j int) bool { return v4[i].Less(v4[j]) })
		v.N = copy(v.Addrs[:], v4)
		s.endpoints[ep.Ifindex] = v
	}
	return s, nil
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// apply writes want over w.cur, keeping w.cur equal to what was written. Order: stale
// endpoints go first (their interfaces fail closed), then ipcache, policy and endpoint
// upserts, then stale policy and ipcache entries (before the upserts when old and new
// together would not fit in the map).
func (w *Writer) apply(want *state, st *Stats) error {
	cur := w.cur
	for ifindex := range cur.endpoints {
		if _, ok := want.endpoints[ifindex]; ok {
			continue
		}
		if err := w.dp.DeleteEndpoint(ifindex); err != nil && !errors.Is(err, ebpf.ErrNotFound) {
			return fmt.Errorf("delete endpoint: %w", err)
		}
		delete(cur.endpoints, ifindex)
		st.Endpoints.Deleted++
	}
	deletePolicy := func() error {
		for k := range cur.policy {
			if _, ok := want.policy[k]; ok {
				continue
			}
			if err := w.dp.DeletePolicy(k); err != nil && !errors.Is(err, ebpf.ErrNotFound) {
				return fmt.Errorf("delete policy: %w", err)
			}
			delete(cur.policy, k)
			st.Policy.Deleted++
		}
		return nil
	}
	deleteIPCache := func() error {
		for p := range cur.ipcache {
			if _, ok := want.ipcache[p]; ok {
				continue
			}
			if err := w.dp.DeleteIPCache(p); err != nil && !errors.Is(err, ebpf.ErrNotFound) {
				return fmt.Errorf("delete ipcache: %w", err)
			}
			delete(cur.ipcache, p)
			st.IPCache.Deleted++
		}
		return nil
	}
	var late []func() error
	for _, d := range []struct {
		del         func() error
		union, capa int
	}{
		{deleteIPCache, unionSize(cur.ipcache, want.ipcache), w.caps.ipcache},
		{deletePolicy, unionSize(cur.policy, want.policy), w.caps.policy},
	} {
		if d.capa > 0 && d.union > d.capa {
			if err := d.del(); err != nil {
				return err
			}
		} else {
			late = append(late, d.del)
		}
	}
	for p, class := range want.ipcache {
		old, ok := cur.ipcache[p]
		if ok && old == class {
			continue
		}
		if err := w.dp.SetIPCache(p, class); err != nil {
			return fmt.Errorf("write ipcache: %w", err)
		}
		cur.ipcache[p] = class
		count(&st.IPCache, ok)
	}
	for k, v := range want.policy {
		old, ok := cur.policy[k]
		if ok && old == v {
			continue
		}
		if err := w.dp.SetPolicy(k, v); err != nil {
			return fmt.Errorf("write policy: %w", err)
		}
		cur.policy[k] = v
		count(&st.Policy, ok)
	}
	for ifindex, v := range want.endpoints {
		old, ok := cur.endpoints[ifindex]
		if ok && old == v {
			continue
		}
		if err := w.dp.SetEndpoint(ifindex, v.toEbpf()); err != nil {
			return fmt.Errorf("write endpoint: %w", err)
		}
		cur.endpoints[ifindex] = v
		count(&st.Endpoints, ok)
	}
	// Policy entries go before the ipcache prefixes their classes came from.
	for i := len(late) - 1; i >= 0; i-- {
		if err := late[i](); err != nil {
			return err
		}
	}
	return nil
}

func unionSize[K comparable, V any](a, b map[K]V) int {
	n := len(a)
	for k := range b {
		if _, ok := a[k]; !ok {
			n++
		}
	}
	return n
}

func count(m *MapStats, existed bool) {
	if existed {
		m.Updated++
	} else {
		m.Added++
	}
}
