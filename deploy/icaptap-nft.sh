#!/bin/sh
# icaptap-nft.sh: insert or remove the nftables rules that hand an ICAP
# client's connections to icaptap in transparent mode (icaptap proxy
# --transparent), without changing the client's configuration.
#
# All rules live in one table of their own (inet icaptap), so removal is one
# command and never touches anyone else's rules.
#
#   icaptap-nft.sh [--dry-run] insert [--sensor IP] [--port 1344] [--to-port 11344] [--tproxy]
#   icaptap-nft.sh [--dry-run] remove [--tproxy]
#   icaptap-nft.sh status
#
# redirect (default): NAT REDIRECT in prerouting; run icaptap with
#   --transparent redirect --listen 0.0.0.0:TO_PORT.
# --tproxy: TPROXY plus a policy route for marked packets; run icaptap with
#   --transparent tproxy --listen 0.0.0.0:TO_PORT (needs CAP_NET_ADMIN).
# --dry-run: print the rules and have nft check them (nft -c); change nothing.
set -eu

table=icaptap
mark=0x1344
route_table=1344
dry_run=0
action=
sensor=
port=1344
to_port=11344
tproxy=0

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        insert|remove|status) action=$1 ;;
        --sensor) sensor=${2:?--sensor needs an IP address}; shift ;;
        --port) port=${2:?--port needs a port}; shift ;;
        --to-port) to_port=${2:?--to-port needs a port}; shift ;;
        --tproxy) tproxy=1 ;;
        -h|--help) usage ;;
        *) echo "icaptap-nft.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
[ -n "$action" ] || usage
command -v nft >/dev/null || { echo "icaptap-nft.sh: nft not found; install the nftables package" >&2; exit 1; }

case "$sensor" in
    "") match="tcp dport $port"; family=ip ;;
    *:*) match="ip6 daddr $sensor tcp dport $port"; family=ip6 ;;
    *) match="ip daddr $sensor tcp dport $port"; family=ip ;;
esac

ruleset() {
    if [ "$tproxy" = 1 ]; then
        cat <<RULES
table inet $table {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        $match tproxy $family to :$to_port meta mark set $mark accept comment "icaptap transparent (TPROXY)"
    }
}
RULES
    else
        cat <<RULES
table inet $table {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        $match redirect to :$to_port comment "icaptap transparent (REDIRECT)"
    }
}
RULES
    fi
}

run() {
    if [ "$dry_run" = 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

case "$action" in
    insert)
        if nft list table inet "$table" >/dev/null 2>&1; then
            echo "icaptap-nft.sh: table inet $table exists already; run '$0 remove' first" >&2
            exit 1
        fi
        if [ "$dry_run" = 1 ]; then
            ruleset
            ruleset | nft -c -f -
            echo "icaptap-nft.sh: dry run: the rules above are valid; nothing was changed"
        else
            ruleset | nft -f -
        fi
        if [ "$tproxy" = 1 ]; then
            run ip rule add fwmark "$mark" lookup "$route_table"
            run ip route add local 0.0.0.0/0 dev lo table "$route_table"
        fi
        [ "$dry_run" = 1 ] || echo "icaptap-nft.sh: inserted: connections to ${sensor:-any address} port $port go to icaptap on port $to_port"
        ;;
    remove)
        if nft list table inet "$table" >/dev/null 2>&1; then
            run nft delete table inet "$table"
        else
            echo "icaptap-nft.sh: no table inet $table; nothing to remove"
        fi
        if [ "$tproxy" = 1 ]; then
            run ip rule del fwmark "$mark" lookup "$route_table" || true
            run ip route del local 0.0.0.0/0 dev lo table "$route_table" || true
        fi
        ;;
    status)
        nft list table inet "$table" 2>/dev/null || echo "icaptap-nft.sh: not inserted"
        ;;
esac
