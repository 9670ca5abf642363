#!/usr/bin/env bash
# Times `cardinal run --until-end` side by side with the stream processors users would pick
# instead, Kafka Streams (peers/kafka-streams) and Flink (peers/flink), each counting unique users
# per minute and per hour from the same Kafka topic, read from its start (issue 19, part 3).
#
# What it does: builds the three (cargo; mvn -q package), starts its own Apache Kafka through
# scripts/kafka.sh (KAFKA_PORT, default 19092; KAFKA_DIR, default a fresh temporary folder),
# generates FRAMES frames with `cardinal gen` (defaults: ~2 KB each), produces them to a topic of 4
# partitions keyed by uid (so every second of event time is spread evenly over the partitions, as in
# a click topic filled live), and computes the true per-window unique users with Python's json module over the file.
# It FIRST runs each system once and checks that all three equal that truth on every minute and hour
# window, and fails loudly if not; then runs R interleaved rounds (each with a fresh consumer group
# or application id) and prints per system the medians of wall seconds, frames/s, CPU seconds
# (user+sys of the process, /usr/bin/time -v) per million frames, peak RSS, plus the broker's CPU
# seconds during the run, and the ratios of Cardinal to each peer. Rounds are interleaved and medians
# quoted because this machine is shared and noisy.
#
# Everything printed, with the commit, CPU model, core count, load averages and date, also goes to
# docs/report/peers-streaming.txt (REPORT=path to write elsewhere).
#
# Usage: scripts/bench-peers.sh [FRAMES=500000] [ROUNDS=3]
#        scripts/bench-peers.sh --help
# Environment: KAFKA_PORT, KAFKA_DIR, BENCH_DIR (keep the frames file and outputs there),
# CARGO_TARGET_DIR, JAVA_OPTS (the peers' JVM flags; default -Xmx1g), KS_GRACE (Kafka Streams' grace
# period in seconds for the timed runs; default 60), KS_THREADS (its num.stream.threads; default 1,
# Kafka Streams' own default).
#
# Kafka Streams and grace: its stream time is per task, not aligned across partitions or threads, so
# on a backfill its tasks drift apart in event time and, with the 5 s grace that Cardinal and Flink
# use, it drops frames as late. Measured on 500,000 frames: 9,383 dropped (1 thread; lateness up to
# 15 s); with 2 threads 114,532 (up to 113 s late), and still 49,695 at 60 s grace; with the frames
# produced without keys (librdkafka's sticky partitioner then puts minutes of event time in a row on
# one partition) 342,371 at 60 s grace. The check also runs it once at 5 s and prints how far off
# that is, but only KS_GRACE must equal the truth, and the timed rounds use KS_GRACE.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
esac
FRAMES=${1:-500000}
ROUNDS=${2:-3}
[[ "$FRAMES" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [FRAMES] [ROUNDS] (see --help)" >&2; exit 2; }
export KAFKA_PORT=${KAFKA_PORT:-19092}
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
export KAFKA_DIR=${KAFKA_DIR:-$WORK/kafka}
BROKER=127.0.0.1:$KAFKA_PORT
REPORT=${REPORT:-docs/report/peers-streaming.txt}
JAVA_OPTS=${JAVA_OPTS:--Xmx1g}
KS_GRACE=${KS_GRACE:-60}
KS_THREADS=${KS_THREADS:-1}
TOPIC=frames
cleanup() {
  scripts/kafka.sh stop || true
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$(dirname "$REPORT")"
exec > >(tee "$REPORT") 2>&1

echo "== scripts/bench-peers.sh $FRAMES $ROUNDS"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!docs/report' || echo ' (with uncommitted changes)')"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, avx512 in flags: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}'), java: $(java -version 2>&1 | head -1), JAVA_OPTS: $JAVA_OPTS"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== build"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/cardinal
# (Maven 3.8 prints colour resets even with -B: stripped.)
for peer in kafka-streams flink; do
  mvn -B -q -f "peers/$peer/pom.xml" package 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
done
KS_CP="peers/kafka-streams/target/kafka-streams-peer.jar:peers/kafka-streams/target/lib/*"
FLINK_CP="peers/flink/target/flink-peer.jar:peers/flink/target/lib/*"
echo "cardinal: $($BIN --version); Kafka Streams: $(ls peers/kafka-streams/target/lib | grep -o 'kafka-streams-[0-9.]*[0-9]'); Flink: $(ls peers/flink/target/lib | grep -o 'flink-streaming-java-[0-9.]*[0-9]'), $(ls peers/flink/target/lib | grep -o 'flink-connector-kafka-[^j]*[0-9]')"

echo "== broker, frames, truth"
scripts/kafka.sh install apache
scripts/kafka.sh start apache
BROKER_PID=$(cat "$KAFKA_DIR/kafka.pid")
FILE="$WORK/frames-$FRAMES.json"
[ -s "$FILE" ] || $BIN gen --frames "$FRAMES" -o "$FILE"
SIZE=$(stat -c %s "$FILE")
echo "file: $FRAMES frames, $((SIZE / 1000000)) MB"
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKER" --create --topic "$TOPIC" --partitions 4
$BIN produce -b "$BROKER" -t "$TOPIC" --key-field uid "$FILE"

# The truth: root uid (a string) and ts (an int, or a string of digits) of each line, UTC windows.
python3 - "$FILE" > "$WORK/truth.out" <<'EOF'
import json, sys
users = {}
for line in open(sys.argv[1], "rb"):
    try:
        f = json.loads(line)
    except ValueError:
        continue
    uid, ts = (f.get("uid"), f.get("ts")) if isinstance(f, dict) else (None, None)
    if isinstance(ts, str) and ts.isascii() and ts.isdigit():
        ts = int(ts)
    if not isinstance(uid, str) or isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        continue
    for name, size in (("minute", 60), ("hour", 3600)):
        users.setdefault((name, ts - ts % size), set()).add(uid)
for (name, start), uids in sorted(users.items()):
    print(name, start, len(uids))
EOF
echo "truth: $(grep -c '^minute' "$WORK/truth.out") minute windows, $(grep -c '^hour' "$WORK/truth.out") hour windows"

# Each system's JSON lines -> "WINDOW START_UNIX_SECONDS UNIQUE_USERS", sorted like the truth.
normalize() {
  python3 -c '
import sys, json, calendar, time
rows = []
for l in sys.stdin:
    l = l.strip()
    if not l.startswith("{"):
        continue
    v = json.loads(l)
    s = v["start"]
    if isinstance(s, str):
        s = calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
    rows.append((v["window"], s, v["unique_users"]))
for r in sorted(rows):
    print(*r)'
}

broker_cpu() { awk '{ printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$BROKER_PID/stat"; }
now() { date +%s.%N; }

# run SYSTEM TAG: runs one system over the whole topic under /usr/bin/time -v; leaves its normalized
# results in $WORK/SYSTEM-TAG.out and appends "wall cpu rss_mb broker_cpu" to $WORK/SYSTEM.times
# (unless TAG is "check").
run() {
  local sys=$1 tag=$2 out="$WORK/$1-$2"
  local b0 b1 t0 t1
  b0=$(broker_cpu); t0=$(now)
  case "$sys" in
    cardinal)
      /usr/bin/time -v -o "$out.time" $BIN run -b "$BROKER" -t "$TOPIC" -g "cardinal-$tag" --from earliest \
        --until-end --windows minute,hour --format json > "$out.json" 2> "$out.err" ;;
    kafka-streams|kafka-streams-5s)
      local grace=$KS_GRACE; [ "$sys" = kafka-streams ] || grace=5
      /usr/bin/time -v -o "$out.time" java $JAVA_OPTS -cp "$KS_CP" cardinal.peers.UniqueUsers --brokers "$BROKER" \
        --topic "$TOPIC" --results-topic "$sys-results-$tag" --app-id "$sys-$tag" --state-dir "$WORK/ks-state-$tag" \
        --grace "$grace" --threads "$KS_THREADS" --until-end > "$out.json" 2> "$out.err" ;;
    flink)
      /usr/bin/time -v -o "$out.time" java $JAVA_OPTS -cp "$FLINK_CP" cardinal.peers.UniqueUsersJob \
        --brokers "$BROKER" --topic "$TOPIC" --group "flink-$tag" > "$out.json" 2> "$out.err" ;;
  esac || { echo "FAILED: $sys ($tag) exited non-zero; its stderr:"; tail -30 "$out.err"; exit 1; }
  t1=$(now); b1=$(broker_cpu)
  rm -rf "$WORK/ks-state-$tag"
  normalize < "$out.json" > "$out.out"
  local wall cpu rss bcpu
  wall=$(echo "$t1 - $t0" | bc)
  cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$out.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$out.time")
  bcpu=$(echo "$b1 - $b0" | bc)
  printf '%-13s %-6s wall %7.2f s  cpu %7.2f s  peak rss %5d MB  broker cpu %6.2f s  | %s\n' \
    "$sys" "$tag" "$wall" "$cpu" "$rss" "$bcpu" "$(grep -E '^(kafka-streams|flink):|frames/s' "$out.err" | tail -1 | cut -c1-260)"
  [ "$tag" = check ] || echo "$wall $cpu $rss $bcpu" >> "$WORK/$sys.times"
}

SYSTEMS="cardinal kafka-streams flink"
echo "== agreement check (one untimed run of each)"
for sys in $SYSTEMS; do run "$sys" check; done
ok=1
for sys in $SYSTEMS; do
  if diff -q "$WORK/truth.out" "$WORK/$sys-check.out" > /dev/null; then
    echo "$sys: equals the truth on all $(wc -l < "$WORK/truth.out") windows"
  else
    ok=0
    echo "MISMATCH: $sys disagrees with the truth (< truth, > $sys):"
    diff "$WORK/truth.out" "$WORK/$sys-check.out" | head -20
  fi
done
[ "$ok" = 1 ] || { echo "FAILED: the systems do not agree; no timings"; exit 1; }
echo "all three agree exactly with the truth on every minute and hour window (Kafka Streams: grace $KS_GRACE s, $KS_THREADS threads)"
# For the record: Kafka Streams with the 5 s grace the others use (informational, not a failure).
run kafka-streams-5s check
python3 - "$WORK/truth.out" "$WORK/kafka-streams-5s-check.out" <<'EOF'
import sys
truth = {tuple(l.split()[:2]): int(l.split()[2]) for l in open(sys.argv[1])}
got = {tuple(l.split()[:2]): int(l.split()[2]) for l in open(sys.argv[2])}
wrong = [k for k in truth if got.get(k) != truth[k]]
print(f"kafka-streams with grace 5 s: {len(truth) - len(wrong)} of {len(truth)} windows right; wrong: " +
      (", ".join(f"{w} {s}: {got.get((w, s), 'missing')} instead of {truth[(w, s)]}" for w, s in wrong[:8]) or "none"))
EOF

echo "== $ROUNDS interleaved rounds"
for round in $(seq "$ROUNDS"); do
  for sys in $SYSTEMS; do
    run "$sys" "r$round"
    diff -q "$WORK/truth.out" "$WORK/$sys-r$round.out" > /dev/null || { echo "MISMATCH: $sys in round $round"; exit 1; }
  done
done

echo "== medians ($FRAMES frames, $((SIZE / 1000000)) MB, $ROUNDS rounds)"
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A WALL CPU RSS BCPU
for sys in $SYSTEMS; do
  WALL[$sys]=$(awk '{ print $1 }' "$WORK/$sys.times" | median)
  CPU[$sys]=$(awk '{ print $2 }' "$WORK/$sys.times" | median)
  RSS[$sys]=$(awk '{ print $3 }' "$WORK/$sys.times" | median)
  BCPU[$sys]=$(awk '{ print $4 }' "$WORK/$sys.times" | median)
  printf '%-13s wall %7.2f s  %9.0f frames/s  cpu %7.2f s/M frames  peak rss %5d MB  broker cpu %6.2f s/M frames\n' \
    "$sys" "${WALL[$sys]}" "$(echo "$FRAMES / ${WALL[$sys]}" | bc -l)" \
    "$(echo "${CPU[$sys]} * 1000000 / $FRAMES" | bc -l)" "${RSS[$sys]}" "$(echo "${BCPU[$sys]} * 1000000 / $FRAMES" | bc -l)"
done
for peer in kafka-streams flink; do
  printf 'cardinal / %-13s wall %.3f (%.1fx faster)  cpu %.3f (%.1fx less)  peak rss %.3f\n' "$peer" \
    "$(echo "${WALL[cardinal]} / ${WALL[$peer]}" | bc -l)" "$(echo "${WALL[$peer]} / ${WALL[cardinal]}" | bc -l)" \
    "$(echo "${CPU[cardinal]} / ${CPU[$peer]}" | bc -l)" "$(echo "${CPU[$peer]} / ${CPU[cardinal]}" | bc -l)" \
    "$(echo "${RSS[cardinal]} / ${RSS[$peer]}" | bc -l)"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
