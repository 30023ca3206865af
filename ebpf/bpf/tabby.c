// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Tabby workload-interface policy program.
//
// Two entry points for the host side of a workload's veth or tap:
//   tabby_from_wl: TC ingress (traffic leaving the workload, policy "egress")
//   tabby_to_wl:   TC egress  (traffic entering the workload, policy "ingress")
//
// Per IPv4 packet the program does a fixed number of map lookups, whatever the
// number of rules: endpoint, endpoint counter (1), conntrack (2), ipcache (1), policy
// (at most 6; 8 for ICMP, whose type and code take the port's place), rule counter
// (1, 2 when a Log rule matched). IPv6 and non-IP traffic pass untouched for now.
//
// Layouts here are mirrored by ebpf/maps.go; change both together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_SHOT 2

// Directions, as seen by the workload (policy terms).
#define DIR_INGRESS 0 // into the workload (tabby_to_wl)
#define DIR_EGRESS 1  // out of the workload (tabby_from_wl)

#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

#define CLASS_ANY 0xffffffff

#define REASON_POLICY 1	     // a rule denied it
#define REASON_DEFAULT 2     // no rule matched, endpoint default is deny
#define REASON_SPOOF 3	     // source IP or MAC is not the endpoint's
#define REASON_NO_ENDPOINT 4 // program attached but endpoint not configured
#define REASON_LOG 5	     // not a drop: a Log rule matched (drop_event.verdict says what followed)

#define CT_KIND_ECHO_REQUEST 1 // ct_key.kind of a flow an ICMP echo request opened

#ifndef ICMP_ECHO
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#endif

#define CT_STATE_NEW 1
#define CT_STATE_ESTABLISHED 2

#define CT_TIMEOUT_TCP_NS (3600ULL * 1000000000ULL)
#define CT_TIMEOUT_OTHER_NS (120ULL * 1000000000ULL)

#define MAX_EP_ADDRS 4

// Explain mode (BPF_PROG_TEST_RUN only): when cb[0] and cb[1] of the __sk_buff given as
// ctx_in hold EXPLAIN_MAGIC0/1, the program takes its normal parse, anti-spoof and
// policy path for a new flow but has no side effect (no conntrack lookup or update, no
// counter, no drop event) and reports what decided in the ctx_out it returns:
//   cb[0] = EXPLAIN_DONE
//   cb[1] = verdict (VERDICT_ALLOW/VERDICT_DENY) | stage << 8
//   cb[2] = rule id (0: endpoint default or none)
//   cb[3] = peer class (policy and default stages)
//   cb[4] = endpoint id (0 when no endpoint)
// Two magic words make a real packet's leftover cb contents matching them negligible;
// even then only side effects are skipped, the verdict is the same.
#define EXPLAIN_MAGIC0 0x7ab0e7a1
#define EXPLAIN_MAGIC1 0x5ca1ab1e
#define EXPLAIN_DONE 0xd0e7a1ed

#define STAGE_PASSTHROUGH 1 // not IPv4: passed untouched
#define STAGE_MALFORMED 2   // truncated or bad IPv4 header: dropped
#define STAGE_NO_ENDPOINT 3 // program attached but endpoint not configured
#define STAGE_SPOOF 4	    // source IP or MAC is not the endpoint's
#define STAGE_POLICY 5	    // a policy entry matched
#define STAGE_DEFAULT 6	    // no entry matched: the endpoint's default
#define STAGE_DHCP 7	    // a DHCP exchange with the host: always allowed

struct ipcache_key {
	__u32 prefixlen;
	__u32 addr; // network byte order
};

// For ICMP the port field carries the type and code: (type+1)<<8 | code for one type
// and code, type+1 for every code of a type (felix/policy HashICMPExact/HashICMPType).
struct policy_key {
	__u32 endpoint;
	__u8 direction;
	__u8 proto;  // 0 = any protocol
	__u16 port;  // host byte order; 0 = any port
	__u32 peer;  // peer class id; CLASS_ANY = any peer
};

// log_rule_id != 0: a Log rule matched before the deciding rule (or the default): the
// program reports the packet (a REASON_LOG event naming log_rule_id), then applies the
// verdict.
struct policy_value {
	__u8 verdict;
	__u8 pad[3];
	__u32 rule_id;
	__u32 log_rule_id;
};

struct endpoint {
	__u32 id;
	__u8 ingress_default;
	__u8 egress_default;
	__u8 mac[6];			 // all zero = no MAC check
	__u32 ipv4[MAX_EP_ADDRS];	 // network byte order
	__u32 n_ipv4;
};

struct ct_key {
	__u32 ifindex;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 kind; // CT_KIND_ECHO_REQUEST, or 0
	__u8 pad[2];
};

struct ct_value {
	__u64 last_seen_ns;
	__u8 state;
	__u8 direction; // direction of the packet that opened the flow
	__u8 pad[6];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// Per-endpoint counters are keyed by the host-side ifindex (the tabby_endpoints key,
// stable for the interface's life, unlike compiled endpoint ids) and direction.
struct ep_counter_key {
	__u32 ifindex;
	__u8 direction;
	__u8 pad[3];
};

struct ep_counter {
	__u64 allowed_packets;
	__u64 allowed_bytes;
	__u64 denied_packets;
	__u64 denied_bytes;
	// first_ns and last_ns: bpf_ktime_get_ns (CLOCK_MONOTONIC) of the first and the
	// last allowed packet on this CPU; 0 before the first. A VM's migration blackout
	// is the gap between its last packet through the old node's tap and its first
	// through the new one's.
	__u64 first_ns;
	__u64 last_ns;
};

struct drop_event {
	__u32 ifindex;
	__u32 saddr;
	__u32 daddr;
	__u32 rule_id;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 reason;
	__u8 direction;
	__u8 verdict; // REASON_LOG: the verdict that followed (VERDICT_*); else 0
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct ipcache_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct ep_counter_key);
	__type(value, struct ep_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_ep_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tabby_drops SEC(".maps");


struct flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u16 ct_id;	 // ICMP echo identifier: tells ping flows apart in conntrack
	__u8 icmp_type; // ICMP only
	__u8 icmp_code; // ICMP only
	__u8 has_icmp;	// ICMP type and code were read (not a non-first fragment)
};

// parse_ipv4 fills f from the packet; returns 0 for IPv4, 1 for pass-through
// (not IPv4), -1 for a malformed packet.
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct flow *f, __u8 smac[6])
{
	struct ethhdr eth;
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return 1;
	__builtin_memcpy(smac, eth.h_source, 6);
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return 1;
	if (bpf_skb_load_bytes(skb, sizeof(eth), &ip, sizeof(ip)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	f->saddr = ip.saddr;
	f->daddr = ip.daddr;
	f->proto = ip.protocol;
	f->sport = 0;
	f->dport = 0;
	f->ct_id = 0;
	f->icmp_type = 0;
	f->icmp_code = 0;
	f->has_icmp = 0;
	// Non-first fragments carry no L4 header: they match port-wildcard rules only.
	if (ip.frag_off & bpf_htons(0x1fff))
		return 0;

	__u32 l4 = sizeof(eth) + ip.ihl * 4;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
			return -1;
		f->sport = bpf_ntohs(ports[0]);
		f->dport = bpf_ntohs(ports[1]);
		break;
	}
	case IPPROTO_ICMP: {
		// ICMP has no ports; its type and code take their place in policy. An echo
		// request and its reply share an identifier, which conntrack keys on.
		__u8 h[6];
		if (bpf_skb_load_bytes(skb, l4, h, sizeof(h)) < 0)
			return -1;
		f->icmp_type = h[0];
		f->icmp_code = h[1];
		f->has_icmp = 1;
		if (h[0] == ICMP_ECHO || h[0] == ICMP_ECHOREPLY)
			f->ct_id = ((__u16)h[4] << 8) | h[5];
		break;
	}
	}
	return 0;
}

static __always_inline void count(__u32 rule_id, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(&tabby_counters, &rule_id);
	if (c) {
		c->packets++;
		c->bytes += len;
		return;
	}
	struct counter init = {.packets = 1, .bytes = len};
	bpf_map_update_elem(&tabby_counters, &rule_id, &init, BPF_NOEXIST);
}

// count_ep adds the packet to its interface's allowed or denied counter.
static __always_inline void count_ep(__u32 ifindex, __u8 dir, int allowed, __u32 len, __u64 now)
{
	struct ep_counter_key k = {.ifindex = ifindex, .direction = dir};
	struct ep_counter *c = bpf_map_lookup_elem(&tabby_ep_counters, &k);
	if (c) {
		if (allowed) {
			c->allowed_packets++;
			c->allowed_bytes += len;
			if (!c->first_ns)
				c->first_ns = now;
			c->last_ns = now;
		} else {
			c->denied_packets++;
			c->denied_bytes += len;
		}
		return;
	}
	struct ep_counter init = {};
	if (allowed) {
		init.allowed_packets = 1;
		init.allowed_bytes = len;
		init.first_ns = now;
		init.last_ns = now;
	} else {
		init.denied_packets = 1;
		init.denied_bytes = len;
	}
	bpf_map_update_elem(&tabby_ep_counters, &k, &init, BPF_NOEXIST);
}

// report emits an event on the drops ring buffer: a drop, or (REASON_LOG) a packet a
// Log rule matched, with the verdict that followed.
static __always_inline void report(struct __sk_buff *skb, struct flow *f, __u8 dir, __u32 rule_id,
				   __u8 reason, __u8 verdict)
{
	struct drop_event *e = bpf_ringbuf_reserve(&tabby_drops, sizeof(*e), 0);
	if (e) {
		e->ifindex = skb->ifindex;
		e->saddr = f->saddr;
		e->daddr = f->daddr;
		e->rule_id = rule_id;
		e->sport = f->sport;
		e->dport = f->dport;
		e->proto = f->proto;
		e->reason = reason;
		e->direction = dir;
		e->verdict = verdict;
		bpf_ringbuf_submit(e, 0);
	}
}

static __always_inline int drop(struct __sk_buff *skb, struct flow *f, __u8 dir, __u32 rule_id,
				__u8 reason)
{
	report(skb, f, dir, rule_id, reason, 0);
	return TC_ACT_SHOT;
}

static __always_inline int spoofed(struct endpoint *ep, struct flow *f, __u8 smac[6])
{
	__u8 zero = 0;
#pragma unroll
	for (int i = 0; i < 6; i++)
		zero |= ep->mac[i];
	if (zero) {
#pragma unroll
		for (int i = 0; i < 6; i++)
			if (ep->mac[i] != smac[i])
				return 1;
	}
	// DHCP discovery/request before the workload has an address.
	if (f->saddr == 0 && f->proto == IPPROTO_UDP && f->sport == 68 && f->dport == 67)
		return 0;
#pragma unroll
	for (int i = 0; i < MAX_EP_ADDRS; i++) {
		if (i < ep->n_ipv4 && ep->ipv4[i] == f->saddr)
			return 0;
	}
	return 1;
}

// dhcp reports a DHCP exchange between the workload and Tabby's DHCP server on the
// host side (a VM's tap): requests out of the workload to port 67, replies into it from
// the gateway 169.254.1.1:67 to port 68. Like Calico, policy never blocks them: a
// workload must keep its address whatever its policy says. (A request's source was
// checked by anti-spoofing first.)
static __always_inline int dhcp(struct flow *f, __u8 dir)
{
	if (f->proto != IPPROTO_UDP)
		return 0;
	if (dir == DIR_EGRESS)
		return f->sport == 68 && f->dport == 67;
	return f->sport == 67 && f->dport == 68 && f->saddr == bpf_htonl(0xa9fe0101);
}

static __always_inline __u32 peer_class(__u32 addr)
{
	struct ipcache_key k = {.prefixlen = 32, .addr = addr};
	__u32 *c = bpf_map_lookup_elem(&tabby_ipcache, &k);
	return c ? *c : 0;
}

// lookup_policy tries, most specific first: (proto, port), (proto, any port),
// (any proto) for the peer's class, then the same three for any peer. For ICMP the
// port probe is two: the exact type and code, then the type (type 255 has neither).
static __always_inline struct policy_value *lookup_policy(__u32 ep, __u8 dir, struct flow *f,
							  __u32 peer)
{
	struct policy_key k = {.endpoint = ep, .direction = dir};
	struct policy_value *v;
	int icmp = f->proto == IPPROTO_ICMP && f->has_icmp && f->icmp_type != 255;

#pragma unroll
	for (int p = 0; p < 2; p++) {
		k.peer = p == 0 ? peer : CLASS_ANY;
		k.proto = f->proto;
		if (icmp) {
			k.port = ((__u16)(f->icmp_type + 1) << 8) | f->icmp_code;
			v = bpf_map_lookup_elem(&tabby_policy, &k);
			if (v)
				return v;
			k.port = (__u16)f->icmp_type + 1;
			v = bpf_map_lookup_elem(&tabby_policy, &k);
			if (v)
				return v;
		}
		k.port = f->dport;
		if (k.port != 0) {
			v = bpf_map_lookup_elem(&tabby_policy, &k);
			if (v)
				return v;
		}
		k.port = 0;
		v = bpf_map_lookup_elem(&tabby_policy, &k);
		if (v)
			return v;
		k.proto = 0;
		v = bpf_map_lookup_elem(&tabby_policy, &k);
		if (v)
			return v;
	}
	return 0;
}

static __always_inline int explained(struct __sk_buff *skb, __u8 verdict, __u8 stage,
				     __u32 rule_id, __u32 peer, __u32 ep_id)
{
	skb->cb[0] = EXPLAIN_DONE;
	skb->cb[1] = (__u32)verdict | ((__u32)stage << 8);
	skb->cb[2] = rule_id;
	skb->cb[3] = peer;
	skb->cb[4] = ep_id;
	return verdict == VERDICT_ALLOW ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

// explain is handle's path without side effects (see EXPLAIN_MAGIC0).
static __always_inline int explain(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&tabby_endpoints, &ifindex);
	struct flow f = {};
	__u8 smac[6];

	int r = parse_ipv4(skb, &f, smac);
	if (r > 0)
		return explained(skb, VERDICT_ALLOW, STAGE_PASSTHROUGH, 0, 0, 0);
	if (r < 0)
		return explained(skb, VERDICT_DENY, STAGE_MALFORMED, 0, 0, 0);
	if (!ep)
		return explained(skb, VERDICT_DENY, STAGE_NO_ENDPOINT, 0, 0, 0);
	if (dir == DIR_EGRESS && spoofed(ep, &f, smac))
		return explained(skb, VERDICT_DENY, STAGE_SPOOF, 0, 0, ep->id);
	if (dhcp(&f, dir))
		return explained(skb, VERDICT_ALLOW, STAGE_DHCP, 0, 0, ep->id);

	__u32 peer = peer_class(dir == DIR_EGRESS ? f.daddr : f.saddr);
	struct policy_value *pv = lookup_policy(ep->id, dir, &f, peer);
	if (pv && pv->rule_id) // rule 0: the default, after a Log rule
		return explained(skb, pv->verdict == VERDICT_ALLOW ? VERDICT_ALLOW : VERDICT_DENY, STAGE_POLICY,
				 pv->rule_id, peer, ep->id);
	__u8 def = dir == DIR_EGRESS ? ep->egress_default : ep->ingress_default;
	return explained(skb, def == VERDICT_ALLOW ? VERDICT_ALLOW : VERDICT_DENY, STAGE_DEFAULT, 0, peer,
			 ep->id);
}

// decide is handle's verdict for an IPv4 packet of a configured endpoint: 1 allow, 0
// drop (the drop event is emitted).
static __always_inline int decide(struct __sk_buff *skb, struct endpoint *ep, __u8 dir, struct flow *f,
				  __u8 smac[6], __u64 now)
{
	__u32 ifindex = skb->ifindex;
	if (dir == DIR_EGRESS && spoofed(ep, f, smac)) {
		drop(skb, f, dir, 0, REASON_SPOOF);
		return 0;
	}
	if (dhcp(f, dir))
		return 1;

	__u64 timeout = f->proto == IPPROTO_TCP ? CT_TIMEOUT_TCP_NS : CT_TIMEOUT_OTHER_NS;
	// An ICMP echo flow is keyed by its identifier, and opened only by a request: a
	// reply passes as the reverse of a request; a request is never taken for a reply.
	// Other ICMP messages are not tracked: policy judges each by its type and code.
	int icmp = f->proto == IPPROTO_ICMP;
	int tracked = !icmp || !f->has_icmp || f->icmp_type == ICMP_ECHO || f->icmp_type == ICMP_ECHOREPLY;
	__u8 kind = icmp && f->icmp_type == ICMP_ECHO ? CT_KIND_ECHO_REQUEST : 0;
	struct ct_key ck = {.ifindex = ifindex,
			    .saddr = f->saddr,
			    .daddr = f->daddr,
			    .sport = icmp ? f->ct_id : f->sport,
			    .dport = icmp ? 0 : f->dport,
			    .proto = f->proto,
			    .kind = kind};
	struct ct_value *cv = tracked ? bpf_map_lookup_elem(&tabby_conntrack, &ck) : NULL;
	if (cv && cv->direction == dir && now - cv->last_seen_ns < timeout) {
		cv->last_seen_ns = now;
		return 1;
	}
	struct ct_key rk = {.ifindex = ifindex,
			    .saddr = f->daddr,
			    .daddr = f->saddr,
			    .sport = icmp ? f->ct_id : f->dport,
			    .dport = icmp ? 0 : f->sport,
			    .proto = f->proto,
			    .kind = icmp && f->icmp_type == ICMP_ECHOREPLY ? CT_KIND_ECHO_REQUEST : 0};
	cv = kind == CT_KIND_ECHO_REQUEST || !tracked ? NULL : bpf_map_lookup_elem(&tabby_conntrack, &rk);
	if (cv && cv->direction != dir && now - cv->last_seen_ns < timeout) {
		cv->last_seen_ns = now;
		cv->state = CT_STATE_ESTABLISHED;
		return 1;
	}

	__u32 peer = peer_class(dir == DIR_EGRESS ? f->daddr : f->saddr);
	struct policy_value *pv = lookup_policy(ep->id, dir, f, peer);
	__u8 verdict;
	__u32 rule_id = 0;
	__u32 log_rule_id = 0;
	if (pv) {
		verdict = pv->verdict;
		rule_id = pv->rule_id;
		log_rule_id = pv->log_rule_id;
	} else {
		verdict = dir == DIR_EGRESS ? ep->egress_default : ep->ingress_default;
	}
	if (log_rule_id) {
		count(log_rule_id, skb->len);
		report(skb, f, dir, log_rule_id, REASON_LOG, verdict == VERDICT_ALLOW ? VERDICT_ALLOW : VERDICT_DENY);
	}
	count(rule_id, skb->len);
	if (verdict != VERDICT_ALLOW) {
		// An entry with rule 0 is the endpoint default that a Log rule preceded.
		drop(skb, f, dir, rule_id, rule_id ? REASON_POLICY : REASON_DEFAULT);
		return 0;
	}

	if (tracked) {
		struct ct_value nv = {.last_seen_ns = now, .state = CT_STATE_NEW, .direction = dir};
		bpf_map_update_elem(&tabby_conntrack, &ck, &nv, BPF_ANY);
	}
	return 1;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	if (skb->cb[0] == EXPLAIN_MAGIC0 && skb->cb[1] == EXPLAIN_MAGIC1)
		return explain(skb, dir);

	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&tabby_endpoints, &ifindex);
	struct flow f = {};
	__u8 smac[6];

	int r = parse_ipv4(skb, &f, smac);
	if (r > 0)
		return TC_ACT_UNSPEC;
	if (r < 0) {
		if (ep)
			count_ep(ifindex, dir, 0, skb->len, 0);
		return TC_ACT_SHOT;
	}
	if (!ep)
		return drop(skb, &f, dir, 0, REASON_NO_ENDPOINT);
	// One clock read a packet: conntrack's last-seen and the endpoint counter's times.
	__u64 now = bpf_ktime_get_ns();
	int allowed = decide(skb, ep, dir, &f, smac, now);
	count_ep(ifindex, dir, allowed, skb->len, now);
	return allowed ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

SEC("tc")
int tabby_from_wl(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int tabby_to_wl(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

char __license[] SEC("license") = "Dual BSD/GPL";
