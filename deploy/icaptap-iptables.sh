#!/bin/sh
# icaptap-iptables.sh: insert or remove the iptables rules that hand an ICAP
# client's connections to icaptap in transparent mode (icaptap proxy
# --transparent), for hosts that use iptables rather than nftables.
#
# Every rule carries the comment "icaptap", and removal deletes exactly the
# rules insertion added.
#
#   icaptap-iptables.sh [--dry-run] insert [--sensor IP] [--port 1344] [--to-port 11344] [--tproxy]
#   icaptap-iptables.sh [--dry-run] remove [--sensor IP] [--port 1344] [--to-port 11344] [--tproxy]
#   icaptap-iptables.sh status
#
# redirect (default): nat PREROUTING REDIRECT; run icaptap with
#   --transparent redirect --listen 0.0.0.0:TO_PORT.
# --tproxy: mangle PREROUTING TPROXY plus a policy route for marked packets;
#   run icaptap with --transparent tproxy (needs CAP_NET_ADMIN).
# --dry-run: print the rules and have iptables-restore --test check them;
#   change nothing. IPv6 sensors use ip6tables.
set -eu

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
        *) echo "icaptap-iptables.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
[ -n "$action" ] || usage

ipt=iptables
case "$sensor" in *:*) ipt=ip6tables ;; esac
command -v "$ipt" >/dev/null || { echo "icaptap-iptables.sh: $ipt not found; install the iptables package" >&2; exit 1; }

dest=
[ -z "$sensor" ] || dest="-d $sensor"
if [ "$tproxy" = 1 ]; then
    table=mangle
    spec="PREROUTING -p tcp $dest --dport $port -m comment --comment icaptap -j TPROXY --on-port $to_port --tproxy-mark $mark/$mark"
else
    table=nat
    spec="PREROUTING -p tcp $dest --dport $port -m comment --comment icaptap -j REDIRECT --to-ports $to_port"
fi

run() {
    if [ "$dry_run" = 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

check() {
    # iptables-restore --test parses and checks the rule against the kernel
    # without committing it.
    printf '*%s\n-I %s\nCOMMIT\n' "$table" "$spec" | "$ipt-restore" --test --noflush
}

case "$action" in
    insert)
        # shellcheck disable=SC2086
        if $ipt -t "$table" -C $spec 2>/dev/null; then
            echo "icaptap-iptables.sh: the rule is in place already; run '$0 remove' first" >&2
            exit 1
        fi
        if [ "$dry_run" = 1 ]; then
            echo "would run: $ipt -t $table -I $spec"
            check
            echo "icaptap-iptables.sh: dry run: the rule is valid; nothing was changed"
        else
            # shellcheck disable=SC2086
            $ipt -t "$table" -I $spec
        fi
        if [ "$tproxy" = 1 ]; then
            run ip rule add fwmark "$mark" lookup "$route_table"
            run ip route add local 0.0.0.0/0 dev lo table "$route_table"
        fi
        [ "$dry_run" = 1 ] || echo "icaptap-iptables.sh: inserted: connections to ${sensor:-any address} port $port go to icaptap on port $to_port"
        ;;
    remove)
        # shellcheck disable=SC2086
        if $ipt -t "$table" -C $spec 2>/dev/null; then
            # shellcheck disable=SC2086
            run $ipt -t "$table" -D $spec
        else
            echo "icaptap-iptables.sh: no such rule; nothing to remove"
        fi
        if [ "$tproxy" = 1 ]; then
            run ip rule del fwmark "$mark" lookup "$route_table" || true
            run ip route del local 0.0.0.0/0 dev lo table "$route_table" || true
        fi
        ;;
    status)
        $ipt -t nat -S PREROUTING | grep -e '--comment icaptap' || true
        $ipt -t mangle -S PREROUTING | grep -e '--comment icaptap' || echo "icaptap-iptables.sh: (no mangle rules)"
        ;;
esac
