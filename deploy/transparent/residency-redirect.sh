#!/bin/sh
# residency-redirect: send TCP to residency-proxy's transparent listener with iptables (nat
# REDIRECT), for IPv4 and IPv6, and reject UDP 443 so QUIC clients fall back to TCP (the proxy
# does not see UDP).
#
#   residency-redirect.sh sidecar        in a pod's (or an application's) network namespace:
#                                        the OUTPUT chain, every process but the proxy's user
#   residency-redirect.sh host IFACE...  on a container host: the PREROUTING chain, connections
#                                        arriving from the container bridges IFACE...
#   residency-redirect.sh remove         take every rule this script installed out again
#
# Environment (defaults in brackets):
#   PROXY_PORT     [15001]  the transparent listener's port
#   PROXY_UID      [1337]   sidecar: the proxy's user, whose own connections are never
#                           redirected (without this exemption they loop back to the proxy,
#                           which refuses them as `redirect-loop`)
#   EXCLUDE_PORTS  [9090]   destination TCP ports left alone (the proxy's admin port; add any
#                           other port that must stay direct)
#   EXCLUDE_CIDRS  []       destination networks left alone, space-separated, either family
#                           (for example the cluster's pod and service networks)
#   DROP_QUIC      [1]      0 leaves UDP 443 alone
#
# Always left alone: loopback and the host's own addresses (sidecar: the pod's), and TCP 53
# (DNS; UDP is never redirected). Where to bind the listener: sidecar mode redirects to
# 127.0.0.1 and ::1 (bind "127.0.0.1:15001" and "[::1]:15001"); host mode to the first address
# of the interface the connection came in on (bind that address, once per family).
#
# Rules live in their own chains (RESIDENCY_REDIRECT in the nat table, RESIDENCY_QUIC in the
# filter table), so running the script again replaces them and `remove` leaves nothing behind.
set -eu

PROXY_PORT=${PROXY_PORT:-15001}
PROXY_UID=${PROXY_UID:-1337}
EXCLUDE_PORTS=${EXCLUDE_PORTS:-9090}
EXCLUDE_CIDRS=${EXCLUDE_CIDRS:-}
DROP_QUIC=${DROP_QUIC:-1}

NAT=RESIDENCY_REDIRECT
QUIC=RESIDENCY_QUIC

usage() {
    sed -n '2,13p' "$0" >&2
    exit 64
}

is_v6() {
    case "$1" in *:*) return 0 ;; *) return 1 ;; esac
}

# Remove this script's jumps and chains from one family (`iptables` or `ip6tables`).
remove_family() {
    t=$1
    for hook in OUTPUT PREROUTING; do
        while rule=$($t -t nat -S "$hook" 2>/dev/null | grep -- "-j $NAT\$" | head -n 1) && [ -n "$rule" ]; do
            # shellcheck disable=SC2046 # the rule is words to pass on
            $t -t nat $(echo "$rule" | sed 's/^-A /-D /')
        done
    done
    for hook in OUTPUT FORWARD; do
        while rule=$($t -t filter -S "$hook" 2>/dev/null | grep -- "-j $QUIC\$" | head -n 1) && [ -n "$rule" ]; do
            # shellcheck disable=SC2046
            $t -t filter $(echo "$rule" | sed 's/^-A /-D /')
        done
    done
    $t -t nat -F "$NAT" 2>/dev/null || true
    $t -t nat -X "$NAT" 2>/dev/null || true
    $t -t filter -F "$QUIC" 2>/dev/null || true
    $t -t filter -X "$QUIC" 2>/dev/null || true
}

# Install the chains for one family: `install_family TOOL MODE LOOPBACK REJECT-WITH IFACES...`.
install_family() {
    t=$1 mode=$2 loopback=$3 reject=$4
    shift 4
    $t -t nat -N "$NAT"
    $t -t nat -A "$NAT" -p tcp -d "$loopback" -j RETURN
    $t -t nat -A "$NAT" -p tcp -m addrtype --dst-type LOCAL -j RETURN
    if [ "$mode" = sidecar ]; then
        $t -t nat -A "$NAT" -p tcp -m owner --uid-owner "$PROXY_UID" -j RETURN
    fi
    $t -t nat -A "$NAT" -p tcp --dport 53 -j RETURN
    for port in $EXCLUDE_PORTS; do
        $t -t nat -A "$NAT" -p tcp --dport "$port" -j RETURN
    done
    for cidr in $EXCLUDE_CIDRS; do
        if { [ "$t" = ip6tables ] && is_v6 "$cidr"; } || { [ "$t" = iptables ] && ! is_v6 "$cidr"; }; then
            $t -t nat -A "$NAT" -p tcp -d "$cidr" -j RETURN
        fi
    done
    $t -t nat -A "$NAT" -p tcp -j REDIRECT --to-ports "$PROXY_PORT"
    if [ "$DROP_QUIC" != 0 ]; then
        $t -t filter -N "$QUIC"
        $t -t filter -A "$QUIC" -p udp --dport 443 -j REJECT --reject-with "$reject"
    fi
    if [ "$mode" = sidecar ]; then
        $t -t nat -A OUTPUT -p tcp -j "$NAT"
        if [ "$DROP_QUIC" != 0 ]; then
            $t -t filter -A OUTPUT -p udp --dport 443 -m owner ! --uid-owner "$PROXY_UID" -j "$QUIC"
        fi
    else
        for iface in "$@"; do
            $t -t nat -A PREROUTING -i "$iface" -p tcp -j "$NAT"
            if [ "$DROP_QUIC" != 0 ]; then
                $t -t filter -A FORWARD -i "$iface" -p udp --dport 443 -j "$QUIC"
            fi
        done
    fi
}

[ $# -ge 1 ] || usage
mode=$1
shift
case "$mode" in
    sidecar) [ $# -eq 0 ] || usage ;;
    host) [ $# -ge 1 ] || usage ;;
    remove) [ $# -eq 0 ] || usage ;;
    *) usage ;;
esac

remove_family iptables
remove_family ip6tables
[ "$mode" = remove ] && exit 0
install_family iptables "$mode" 127.0.0.0/8 icmp-port-unreachable "$@"
install_family ip6tables "$mode" ::1/128 icmp6-port-unreachable "$@"
