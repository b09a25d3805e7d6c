#!/bin/bash
# bench/perf-compare.sh ROOT OUT
#
# One 1 GiB loopback download from 1 seeder (npm run bench's setup) of the checkout at ROOT (built: its
# dist/), under `perf record -a -g` from the start of the p2p download to its end; then where the
# downloading and the seeding daemons spent their CPU, by thread and by function (bench/perf-threads.ts).
# For a before/after comparison run it on two checkouts (git worktree add ../before COMMIT; link
# node_modules; npm run build there). Needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 1.
set -euo pipefail
ROOT=$(cd "$1" && pwd); OUT=$2; HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
node "$ROOT/dist/bench/loopback.js" --size-mib 1024 --runs 1 --peers 1 --warmup 1 --results "$OUT" > "$OUT/bench.log" 2>&1 &
BENCH=$!
trap 'kill $BENCH 2>/dev/null || true' EXIT
until grep -q "run 1 baseline" "$OUT/bench.log"; do sleep 0.05; kill -0 $BENCH; done
DL=$(pgrep -f "downloader-peers-1/share" | head -1); SD=$(pgrep -f "seeder1/share" | head -1)
perf record -a -g -F 999 -o "$OUT/perf.data" -- bash -c "until grep -q 'run 1 from 1 peer(s), tls' '$OUT/bench.log'; do sleep 0.02; done" > /dev/null 2>&1
wait $BENCH
trap - EXIT
grep "run 1" "$OUT/bench.log"
echo; echo "## downloading daemon"; node "$HERE/dist/bench/perf-threads.js" "$OUT/perf.data" "$DL"
echo; echo "## seeding daemon"; node "$HERE/dist/bench/perf-threads.js" "$OUT/perf.data" "$SD"
