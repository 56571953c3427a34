#!/bin/bash
# Broker request latency as uid 65534, for comparing two checkouts (root; makes a
# throwaway netns): scripts/broker-latency.sh REPO  runs REPO's broker and times 15
# up, down and list requests from this checkout's client; prints median and max ms.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$1; NS=qnhlat$$; D=$(mktemp -d /tmp/qnh-lat-XXXX); chmod 755 $D
ip netns add $NS
trap 'kill $BP 2>/dev/null; sleep 1; ip netns del $NS; rm -rf $D' EXIT
ip netns exec $NS ip link add br0 type bridge; ip netns exec $NS ip link set br0 up
printf 'allow br0\nallow mode:bridge user=65534\n' > $D/bridge.conf; mkdir -p $D/config/profiles; mkdir -m 700 $D/state
QEMU_NET_HELPER_STATE_DIR=$D/state ip netns exec $NS node $REPO/bin/qemu-net-helper.cjs daemon --socket $D/b.sock --acl $D/bridge.conf --config $D/config 2>$D/log & BP=$!
for i in $(seq 60); do grep -q listening $D/log 2>/dev/null && break; sleep 0.5; done
REQS=$(node -e 'const r=[];for(let i=0;i<15;i++){r.push({v:1,op:"up",options:{mode:"bridge",dev:"br0",id:"l"+i}});r.push({v:1,op:"down",id:"l"+i});r.push({v:1,op:"list"})}console.log(JSON.stringify({kind:"timed",socket:process.argv[1],requests:r,gapMs:100}))' $D/b.sock)
ip netns exec $NS setpriv --reuid=65534 --regid=65534 --clear-groups node "$HERE/../dist/test/lib/hostile-client.js" "$REQS" | node -e 'const a=JSON.parse(require("fs").readFileSync(0,"utf8"));for(const [k,o] of [["up",0],["down",1],["list",2]]){const v=a.filter((_,i)=>i%3===o).map(r=>r.ms).sort((x,y)=>x-y);console.log(k, "median", v[7].toFixed(1), "max", v[14].toFixed(1), "ok", a.filter((_,i)=>i%3===o).every(r=>r.ok))}'
