# Network namespaces joined by a bridge, with NAT routers, for tests/nat_relay_test.sh and
# bench/relay_bench.sh. Source it after setting:
#   tag     a short prefix unique to this run (namespaces are "$tag-NAME")
#   spaces  the namespace names; "sw" holds the bridge br0 of the public network
#   tmp     a scratch folder (removed by netns_cleanup)
#   pids    the processes to kill on cleanup (an array; the caller appends)
# The set-up functions return 1 and leave the reason in $netns_error; the caller decides
# whether that skips a test or fails a benchmark. Needs root (CAP_NET_ADMIN).
netns_error=""

nsx() { local n="$1"; shift; ip netns exec "$tag-$n" "$@"; }

netns_cleanup() {
  local p n
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  # Anything still running inside the namespaces (a child of a backgrounded subshell, say).
  for n in "${spaces[@]}"; do
    for p in $(ip netns pids "$tag-$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  wait 2>/dev/null
  for n in "${spaces[@]}"; do ip netns del "$tag-$n" 2>/dev/null; done
  rm -rf "$tmp"
}

# Every namespace of $spaces with its loopback up, and the bridge in "$tag-sw".
netns_create() {
  local n
  for n in "${spaces[@]}"; do
    ip netns add "$tag-$n" 2>/dev/null || { netns_error="cannot create network namespaces here"; return 1; }
  done
  for n in "${spaces[@]}"; do nsx "$n" ip link set lo up; done
  ip -n "$tag-sw" link add br0 type bridge || { netns_error="cannot create a bridge"; return 1; }
  ip -n "$tag-sw" link set br0 up
}

# netns_public NS IP [PREFIX]: a veth from NS into the bridge, NS at IP/PREFIX (default 24; a
# shorter prefix puts hosts of several /24 networks on the one bridge).
netns_public() {
  ip link add "p$tag$1" netns "$tag-$1" type veth peer name "s$tag$1" netns "$tag-sw" ||
    { netns_error="cannot create veth pairs"; return 1; }
  ip -n "$tag-sw" link set "s$tag$1" master br0 up
  ip -n "$tag-$1" addr add "$2/${3:-24}" dev "p$tag$1"
  ip -n "$tag-$1" link set "p$tag$1" up
}

# netns_private HOST NAT NET: HOST on a private network NET.0/24 at NET.2, behind the router
# NAT (NET.1, already public through netns_public), which masquerades what leaves it.
netns_private() {
  ip link add "h$tag$1" netns "$tag-$1" type veth peer name "n$tag$1" netns "$tag-$2" ||
    { netns_error="cannot create veth pairs"; return 1; }
  ip -n "$tag-$2" addr add "$3.1/24" dev "n$tag$1"
  ip -n "$tag-$2" link set "n$tag$1" up
  ip -n "$tag-$1" addr add "$3.2/24" dev "h$tag$1"
  ip -n "$tag-$1" link set "h$tag$1" up
  ip -n "$tag-$1" route add default via "$3.1"
  nsx "$2" sysctl -qw net.ipv4.ip_forward=1 || { netns_error="cannot enable forwarding in a namespace"; return 1; }
  nsx "$2" iptables -t nat -A POSTROUTING -o "p$tag$2" -j MASQUERADE 2>"$tmp/iptables.err" ||
    { netns_error="the kernel lacks nat support for iptables: $(head -1 "$tmp/iptables.err")"; return 1; }
}
