#!/bin/bash
# What the line per exchange costs a busy proxy (docs/performance.md, "The
# line per exchange on the console"). Build first:
#   cargo build --release -p icaptap --bin icaptap
# usage: benches/live-lines.sh MODE SECONDS   (MODE: quiet, file, null, pty)
# Needs ss (iproute2) and script (util-linux); everything on loopback.
B=${ICAPTAP:-$(dirname "$0")/../target/release/icaptap}
MODE=$1; SECS=${2:-10}
W=$(mktemp -d)
$B sensor --listen 127.0.0.1:0 > $W/sensor.out 2>&1 &
SP=$!
sleep 0.5
SPORT=$(ss -ltnp 2>/dev/null | grep "pid=$SP," | awk '{print $4}' | sed 's/.*://' | head -1)
ARGS="proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:$SPORT --out $W/run --no-pcap --status-every 0s"
case $MODE in
  quiet) $B $ARGS -q > $W/stdout 2> $W/stderr & PP=$! ;;
  null)  $B $ARGS > /dev/null 2> $W/stderr & PP=$! ;;
  file)  $B $ARGS > $W/stdout 2> $W/stderr & PP=$! ;;
  pty)   script -qfec "exec $B $ARGS" /dev/null > $W/stdout 2>&1 < /dev/null & SCP=$!; sleep 0.5; PP=$(cat /proc/$SCP/task/$SCP/children | awk '{print $1}') ;;
esac
sleep 1
LISTEN=$(ss -ltnp 2>/dev/null | grep "pid=$PP," | awk '{print $4}' | head -1)
$B client icap://$LISTEN/av/respmod --concurrency 8 --duration ${SECS}s > $W/client.out 2>&1
read -r -a st < /proc/$PP/stat
CPU=$(( (${st[13]} + ${st[14]}) ))
kill -TERM $PP; wait $PP 2>/dev/null; sleep 1
kill $SP 2>/dev/null
LINES=$(grep -c "^[0-9][0-9]:[0-9][0-9]:" $W/stdout 2>/dev/null)
NOTSHOWN=$(grep -o "\.\.\. [0-9]* lines\? not shown" $W/stdout 2>/dev/null | awk '{s+=$2} END {print s+0}')
REC=$(wc -l < $W/run/exchanges.jsonl)
echo "mode=$MODE proxy_cpu_ticks=$CPU records=$REC lines=$LINES not_shown=$NOTSHOWN client: $(grep -iE 'req|exchange|/s' $W/client.out | tail -3 | tr '\n' ' ')"
rm -rf $W
