// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// The x0tta6bl4 node's kernel telemetry collector (docs/telemetry.md). Compiled by
// crates/node/build.rs with clang (-target bpf, with BTF) when the `ebpf` feature is on,
// and loaded by aya (crates/node/src/ebpf/mod.rs).
//
// - tc_ingress / tc_egress (tc, attached with TCX to the node's interfaces): packets and
//   bytes per (interface, direction, peer address). The peer is the source address of a
//   received packet and the destination of a sent one.
// - on_kfree_skb (tp_btf/kfree_skb): packets and bytes dropped per (interface, reason,
//   peer address), only in the node's network namespace (`netns_ino`, set by the loader).
// Both also count per interface alone, in maps that never evict (monotonic counters).
//
// Kernel structures are declared here with only the fields read, and relocated at load
// time against the running kernel's BTF (CO-RE): no vmlinux.h, no kernel headers.
// Maps are per-CPU LRU hashes: no atomics on the packet path, and a flood of addresses
// evicts the oldest entries instead of failing.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

// Entries of the per-peer maps (LRU: the least recently used peer makes room).
#define PEERS_MAX 4096
// Entries of the per-interface maps (not LRU, so their counters never go back; beyond,
// new interfaces or reasons are not counted).
#define INTERFACES_MAX 256
#define REASONS_MAX 1024

struct traffic_key {
	__u32 ifindex;
	__u8 direction; // 0 ingress, 1 egress
	__u8 family;    // 4, 6, or 0 (not IP: ARP, ...)
	__u16 pad;
	__u8 addr[16];
};

struct drop_key {
	__u32 ifindex; // 0 when the packet had no device yet
	__u32 reason;  // enum skb_drop_reason
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

// Per interface: (ifindex, direction) for traffic, (ifindex, reason) for drops.
struct pair_key {
	__u32 ifindex;
	__u32 value;
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, PEERS_MAX);
	__type(key, struct traffic_key);
	__type(value, struct counters);
} TRAFFIC SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, PEERS_MAX);
	__type(key, struct drop_key);
	__type(value, struct counters);
} DROPS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, INTERFACES_MAX);
	__type(key, struct pair_key);
	__type(value, struct counters);
} INTERFACE_TRAFFIC SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, REASONS_MAX);
	__type(key, struct pair_key);
	__type(value, struct counters);
} INTERFACE_DROPS SEC(".maps");

// The inode of the node's network namespace (/proc/self/ns/net); 0 counts every namespace.
volatile const __u64 netns_ino = 0;

static __always_inline void add(void *map, const void *key, __u64 bytes)
{
	struct counters *value = bpf_map_lookup_elem(map, key);
	if (!value) {
		struct counters zero = {};
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		value = bpf_map_lookup_elem(map, key);
		if (!value)
			return;
	}
	// Per-CPU values: this CPU owns them.
	value->packets += 1;
	value->bytes += bytes;
}

// ----- tc: traffic per interface and peer -----

static __always_inline int count_traffic(struct __sk_buff *skb, __u8 direction)
{
	struct traffic_key key = {};
	key.ifindex = skb->ifindex;
	key.direction = direction;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		// Source at 12, destination at 16 of the IPv4 header.
		__u32 offset = direction == 0 ? 12 : 16;
		if (bpf_skb_load_bytes_relative(skb, offset, key.addr, 4, BPF_HDR_START_NET) == 0)
			key.family = 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		// Source at 8, destination at 24 of the IPv6 header.
		__u32 offset = direction == 0 ? 8 : 24;
		if (bpf_skb_load_bytes_relative(skb, offset, key.addr, 16, BPF_HDR_START_NET) == 0)
			key.family = 6;
	}
	if (key.family == 0)
		__builtin_memset(key.addr, 0, sizeof(key.addr));
	struct pair_key total = { .ifindex = key.ifindex, .value = direction };
	add(&TRAFFIC, &key, skb->len);
	add(&INTERFACE_TRAFFIC, &total, skb->len);
	return TC_ACT_UNSPEC; // observe only: the next program or the default action decides
}

SEC("classifier/ingress")
int tc_ingress(struct __sk_buff *skb)
{
	return count_traffic(skb, 0);
}

SEC("classifier/egress")
int tc_egress(struct __sk_buff *skb)
{
	return count_traffic(skb, 1);
}

// ----- kfree_skb: drops by reason -----

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct dst_entry {
	struct net_device *dev;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	int skb_iif;
	unsigned int len;
	__u16 protocol;
	__u16 network_header;
	unsigned char *head;
} __attribute__((preserve_access_index));

// The device of a dropped packet: its own, else (sent, before the output device is set)
// that of its route.
static __always_inline struct net_device *drop_device(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev)
		return dev;
	unsigned long refdst = BPF_CORE_READ(skb, _skb_refdst);
	struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);
	if (!dst)
		return 0;
	return BPF_CORE_READ(dst, dev);
}

static __always_inline unsigned int drop_netns(struct sk_buff *skb, struct net_device *dev)
{
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

// The peer of a dropped packet: its source if it was received (it has an input
// interface), else its destination.
static __always_inline void drop_peer(struct sk_buff *skb, struct drop_key *key)
{
	__u16 protocol = BPF_CORE_READ(skb, protocol);
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 network = BPF_CORE_READ(skb, network_header);
	int received = BPF_CORE_READ(skb, skb_iif) != 0;
	if (!head || network == (__u16)~0U)
		return;
	if (protocol == bpf_htons(ETH_P_IP)) {
		__u32 offset = received ? 12 : 16;
		if (bpf_probe_read_kernel(key->addr, 4, head + network + offset) == 0)
			key->family = 4;
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		__u32 offset = received ? 8 : 24;
		if (bpf_probe_read_kernel(key->addr, 16, head + network + offset) == 0)
			key->family = 6;
	}
	if (key->family == 0)
		__builtin_memset(key->addr, 0, sizeof(key->addr));
}

// tp_btf/kfree_skb: (struct sk_buff *skb, void *location, enum skb_drop_reason reason,
// struct sock *rx_sk); read as raw u64 arguments.
SEC("tp_btf/kfree_skb")
int on_kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	struct net_device *dev = drop_device(skb);
	if (netns_ino != 0 && drop_netns(skb, dev) != netns_ino)
		return 0;
	struct drop_key key = {};
	key.reason = reason;
	key.ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	drop_peer(skb, &key);
	struct pair_key total = { .ifindex = key.ifindex, .value = reason };
	__u32 len = BPF_CORE_READ(skb, len);
	add(&DROPS, &key, len);
	add(&INTERFACE_DROPS, &total, len);
	return 0;
}

// GPL-compatible: tp_btf programs and bpf_probe_read_kernel require it.
char LICENSE[] SEC("license") = "GPL";
