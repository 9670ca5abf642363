#!/usr/bin/env bash
# The development and CI Kafka broker: Apache Kafka (KRaft, one node, jars from Maven Central)
# or Tansu (crates.io `tansu` 0.6.0, a Kafka-compatible broker in Rust).
#
#   scripts/kafka.sh install [ENGINE]   install the broker if missing. apache (default): copy Kafka's
#                                       jars into $KAFKA_LIBS with Maven (~15 s cold); tansu: cargo
#                                       install into ~/.cargo/bin (~10 min cold)
#   scripts/kafka.sh start [ENGINE]     start it on 127.0.0.1:$KAFKA_PORT and wait until it serves.
#                                       ENGINE: apache (default), tansu (SQLite: right offsets,
#                                       survives restarts) or tansu-memory (fast; benchmarks only)
#   scripts/kafka.sh run apache         the same broker in the foreground (exec: its PID is this one),
#                                       for a caller that owns its life (the tests); no wait
#   scripts/kafka.sh stop               stop the broker of $KAFKA_DIR, whichever engine (TERM, then KILL)
#   scripts/kafka.sh status             say whether it answers, and which engine runs
#   scripts/kafka.sh apache-libs        print the folder of Kafka's jars: java -cp "DIR/*" CLASS ...
#   scripts/kafka.sh apache-classpath   print "DIR/*", ready for java -cp
#   scripts/kafka.sh tool CLASS ARGS..  run one of Kafka's tool classes with those jars, e.g.
#                                       tool org.apache.kafka.tools.TopicCommand --bootstrap-server
#                                       127.0.0.1:9092 --list
#
# Environment: KAFKA_PORT (default 9092), KAFKA_DIR (default .kafka: data, logs, PID),
# KAFKA_VERSION (default 4.4.0), KAFKA_LIBS (default ~/.cache/cardinal/kafka-$KAFKA_VERSION/libs),
# KAFKA_CONTROLLER_PORT (default: the first free port above KAFKA_PORT, kept in $KAFKA_DIR),
# KAFKA_HEAP_OPTS and KAFKA_JVM_OPTS (override the broker's JVM flags below), KAFKA_TOOL_OPTS (the
# `tool` verb's JVM flags). See kafka/NOTES.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${KAFKA_PORT:-9092}
DIR=${KAFKA_DIR:-$PWD/.kafka}
TANSU_PID="$DIR/tansu.pid"
APACHE_PID="$DIR/kafka.pid"
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
LIBS=${KAFKA_LIBS:-$HOME/.cache/cardinal/kafka-$KAFKA_VERSION/libs}
# JVM flags for tests on 2 cores (measured in kafka/NOTES.md):
# - heap capped at 512 MB but starting at 64 MB: idle RSS about 310 MB instead of 420-440 MB with
#   -Xms512m, at the same throughput, so two brokers stay cheap;
# - SerialGC: one GC thread, nothing running concurrently with the broker on 2 busy cores;
# - TieredStopAtLevel=1 (C1 JIT only): serves ~1.5 s sooner (4.2 s vs 5.8 s, machine loaded), at
#   the same produce rate and a slightly higher consume rate than with C2 (short test runs never
#   repay C2's compile threads on 2 cores). The `tool` verb uses it too: a C2 ProducerPerformance
#   had ~300 ms median produce latency here, a C1 one ~15-30 ms.
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms64m -Xmx512m}
JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}
export PATH="$HOME/.cargo/bin:$PATH"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/${1:-$PORT}") 2>/dev/null; }

install_tansu() {
  if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q '0\.6\.0'; then
    return
  fi
  echo "kafka.sh: installing Tansu 0.6.0 (about 10 minutes on 2 cores, once per machine)" >&2
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
}

install_apache() {
  [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && return
  echo "kafka.sh: copying Apache Kafka $KAFKA_VERSION's jars from Maven into $LIBS" >&2
  # Copy into a scratch folder and rename it at the end, so that an interrupted copy is never
  # taken for a complete one (the test above only looks for the broker's jar).
  rm -rf "$LIBS.tmp"
  mvn -B -q -f "$ROOT/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp"
  rm -rf "$LIBS"
  mv "$LIBS.tmp" "$LIBS"
}

install() {
  case "${1:-apache}" in
    apache) install_apache ;;
    tansu|tansu-memory) install_tansu ;;
    *) echo "kafka.sh: unknown engine '$1' (apache or tansu)" >&2; exit 2 ;;
  esac
}

# Runs one of Kafka's own classes (tools, perf tests) with the broker's jars.
tool() {
  install_apache
  exec java ${KAFKA_TOOL_OPTS:--Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true} \
    -Dlog4j2.configurationFile="$ROOT/kafka/tools-log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

# KRaft's controller listens on a second port. It must stay the same across restarts of one
# $KAFKA_DIR (the formatted log records the controller's endpoint), and must not collide with another
# broker: take KAFKA_CONTROLLER_PORT if set, else the one this $KAFKA_DIR used before, else the first
# port above $PORT on which nothing answers. A second broker is best given KAFKA_PORT two apart (9094).
controller_port() {
  if [ -n "${KAFKA_CONTROLLER_PORT:-}" ]; then echo "$KAFKA_CONTROLLER_PORT"; return; fi
  if [ -s "$DIR/controller.port" ]; then cat "$DIR/controller.port"; return; fi
  local p=$((PORT + 1))
  while answers "$p"; do p=$((p + 1)); done
  echo "$p" > "$DIR/controller.port"
  echo "$p"
}

write_server_properties() {
  local cport=$1
  cat > "$DIR/server.properties" <<EOF
# Written by scripts/kafka.sh start apache: one node in KRaft combined mode, for tests.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$DIR/data
# One replica of everything: there is one broker.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Internal topics with 4 partitions instead of 50: the first consumer group or transaction
# creates them, and 50 partitions make that first use slow on 2 cores.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
# A group's first rebalance at once rather than after 3 s.
group.initial.rebalance.delay.ms=0
num.partitions=1
# Cardinal's tests create their topics with the partitions and configs they need; a typo in a topic
# name must fail (UNKNOWN_TOPIC_OR_PARTITION), as it does on Tansu, instead of making a 1-partition topic.
auto.create.topics.enable=false
EOF
  # A test that needs more (a TLS or SASL listener, other limits) puts its lines in
  # $DIR/extra.properties; they come last, so they override the lines above (kafka/NOTES.md has an example).
  if [ -f "$DIR/extra.properties" ]; then
    { echo "# From $DIR/extra.properties:"; cat "$DIR/extra.properties"; } >> "$DIR/server.properties"
  fi
}

# Everything before the JVM starts: jars, properties, storage formatted once.
prepare_apache() {
  install_apache
  local cport; cport=$(controller_port)
  if answers "$cport"; then
    echo "kafka.sh: something already listens on controller port 127.0.0.1:$cport; set KAFKA_CONTROLLER_PORT" >&2
    exit 1
  fi
  write_server_properties "$cport"
  local cp="$LIBS/*"
  # KRaft needs its log directory formatted once; later starts reuse it (and keep the data).
  # --standalone makes this node the quorum's only voter (what kafka-storage.sh format --standalone does).
  if [ ! -f "$DIR/data/meta.properties" ]; then
    local cluster_id  # a Kafka Uuid: 16 random bytes in URL-safe base64 without padding
    # Like Kafka's Uuid.randomUuid, never one that starts with '-': StorageTool would take it
    # for an option and fail ("argument --cluster-id/-t: expected one argument"), 1 start in 64.
    cluster_id=-
    while [ "${cluster_id#-}" != "$cluster_id" ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    java $JVM_OPTS -Dlog4j2.configurationFile="$ROOT/kafka/tools-log4j2.properties" -cp "$cp" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$DIR/server.properties" \
      > "$DIR/format.log" 2>&1 || { cat "$DIR/format.log" >&2; exit 1; }
  fi
  # Keep one previous log; the wait in start_apache looks for this start's "Kafka Server started".
  if [ -f "$DIR/server.log" ]; then mv "$DIR/server.log" "$DIR/server.log.prev"; fi
}

apache_java() {
  exec java $HEAP_OPTS $JVM_OPTS -Dkafka.logs.dir="$DIR" \
    -Dlog4j2.configurationFile="$ROOT/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties"
}

# In the foreground, as this process (exec): for a caller that owns the broker's life, such
# as the tests (tests/common/apache.rs), which kill it with the process they started.
run_apache() {
  mkdir -p "$DIR"
  prepare_apache
  apache_java > "$DIR/kafka.out" 2>&1
}

start_apache() {
  prepare_apache
  (apache_java > "$DIR/kafka.out" 2>&1) &
  echo $! > "$APACHE_PID"
  # Wait until the port answers AND the broker has logged that it started: that comes after it has
  # caught up with the metadata log and been unfenced, so topics can be created and served.
  for _ in $(seq 1 600); do
    if answers && grep -q 'Kafka Server started' "$DIR/server.log" 2>/dev/null; then
      echo "kafka.sh: Apache Kafka $KAFKA_VERSION serves on 127.0.0.1:$PORT (pid $(cat "$APACHE_PID"), log $DIR/server.log)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$APACHE_PID")" 2>/dev/null; then
      echo "kafka.sh: Kafka exited at start; its logs:" >&2
      tail -20 "$DIR/kafka.out" "$DIR/server.log" >&2 2>/dev/null || true
      rm -f "$APACHE_PID"; exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: Kafka did not start on 127.0.0.1:$PORT within 60 s; see $DIR/server.log" >&2
  exit 1
}

start_tansu() {
  local engine=$1
  install_tansu
  local url
  case "$engine" in
    tansu) url="sqlite://tansu.db" ;;   # relative to $DIR: Tansu resolves it against its working directory
    tansu-memory) url="memory://tansu/" ;;
  esac
  (cd "$DIR" && exec tansu broker --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine "$url" \
      > "$DIR/tansu.log" 2>&1) &
  echo $! > "$TANSU_PID"
  for _ in $(seq 1 300); do
    if answers; then
      echo "kafka.sh: Tansu ($engine) answers on 127.0.0.1:$PORT (pid $(cat "$TANSU_PID"), log $DIR/tansu.log)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$TANSU_PID")" 2>/dev/null; then
      echo "kafka.sh: Tansu exited at start; its log:" >&2; tail -20 "$DIR/tansu.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: Tansu did not answer on 127.0.0.1:$PORT within 30 s; see $DIR/tansu.log" >&2
  exit 1
}

start() {
  local engine=${1:-apache}
  case "$engine" in
    apache|tansu|tansu-memory) ;;
    sqlite) engine=tansu ;;          # the names this script used when it only ran Tansu
    memory) engine=tansu-memory ;;
    *) echo "kafka.sh: unknown engine '$engine' (apache, tansu or tansu-memory)" >&2; exit 2 ;;
  esac
  if answers; then
    echo "kafka.sh: something already listens on 127.0.0.1:$PORT; not starting another broker" >&2
    return 0
  fi
  mkdir -p "$DIR"
  if [ "$engine" = apache ]; then start_apache; else start_tansu "$engine"; fi
}

# Stops the process in one PID file: TERM (Kafka then shuts down cleanly, which makes the next
# start quicker), up to 10 s, then KILL, and waits until it is gone. A PID that now belongs to
# another program (the broker died and the number was reused) is left alone.
stop_pidfile() {
  local pidfile=$1 pattern=$2
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: pid $pid still alive 10 s after TERM; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$pidfile"
}

stop() {
  stop_pidfile "$APACHE_PID" 'kafka.Kafka'
  stop_pidfile "$TANSU_PID" 'tansu'
}

status() {
  local engine=unknown
  if [ -f "$APACHE_PID" ] && kill -0 "$(cat "$APACHE_PID")" 2>/dev/null; then engine="apache (pid $(cat "$APACHE_PID"))"
  elif [ -f "$TANSU_PID" ] && kill -0 "$(cat "$TANSU_PID")" 2>/dev/null; then engine="tansu (pid $(cat "$TANSU_PID"))"
  fi
  if answers; then echo "up on 127.0.0.1:$PORT: $engine"; else echo "down"; exit 1; fi
}

case "${1:-}" in
  install) install "${2:-apache}" ;;
  start) start "${2:-apache}" ;;
  run)
    [ "${2:-apache}" = apache ] || { echo "kafka.sh: run takes apache only" >&2; exit 2; }
    run_apache ;;
  stop) stop ;;
  status) status ;;
  apache-libs) echo "$LIBS" ;;
  apache-classpath) echo "$LIBS/*" ;;   # for java -cp "$(scripts/kafka.sh apache-classpath)" CLASS
  tool) shift; tool "$@" ;;
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2; exit 2 ;;   # the comment at the top
esac
