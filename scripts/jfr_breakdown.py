"""Where a JVM peer's time goes, from a Java Flight Recorder file (for the peers of bench-peers.sh).

Usage: python3 scripts/jfr_breakdown.py RECORDING.jfr
Reads the CPU samples (jdk.ExecutionSample: threads running Java code; jdk.NativeMethodSample:
threads inside native code, e.g. RocksDB through JNI or waiting in epoll) with `jfr print --json`,
gives each sample to the first component in COMPONENTS that has a frame anywhere on its stack (so a
HashMap.put under Jackson's tree building counts as JSON parsing, and one under a HashSet.add as uid
sets; the frameworks' runtimes get only what no more specific component claims), and prints
the share of samples per component. Native-method samples are listed apart, since a thread blocked
in a native call (a poll, a socket read) is sampled there too without using CPU.
"""
import collections
import json
import subprocess
import sys

# (component, prefixes of a frame's class name), in order of precedence.
COMPONENTS = [
    ("JSON parsing (Jackson)", ("com.fasterxml.jackson",)),
    ("RocksDB (JNI)", ("org.rocksdb",)),
    ("compression (lz4/zstd/snappy/gzip)", ("net.jpountz", "com.github.luben", "org.xerial.snappy", "java.util.zip")),
    ("Kafka producer", ("org.apache.kafka.clients.producer",)),
    ("Kafka consumer and record decoding", ("org.apache.kafka.clients.consumer", "org.apache.kafka.common.record",
                                           "org.apache.kafka.clients.FetchSession")),
    ("Kafka network and protocol", ("org.apache.kafka.common.network", "org.apache.kafka.clients.NetworkClient",
                                    "org.apache.kafka.common.requests", "org.apache.kafka.common.protocol",
                                    "org.apache.kafka.common.message", "sun.nio", "java.nio")),
    ("uid sets (java.util.HashSet)", ("java.util.HashSet",)),
    ("serialization (Kafka serdes, Flink serializers)", ("org.apache.kafka.common.serialization",
                                                         "org.apache.flink.api.common.typeutils",
                                                         "org.apache.flink.api.java.typeutils")),
    ("Kafka Streams runtime (tasks, stores, windows)", ("org.apache.kafka.streams",)),
    ("Flink runtime (mailbox, network, windows)", ("org.apache.flink",)),
    ("the peer's own code", ("cardinal.peers",)),
]


def component(frames):
    classes = [frame["method"]["type"]["name"].replace("/", ".") for frame in frames]
    for name, prefixes in COMPONENTS:
        if any(cls.startswith(prefixes) for cls in classes):
            return name
    return "other (JDK threads, GC-triggering allocations, stubs)"


def main(path):
    out = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample,jdk.NativeMethodSample", path],
                         check=True, capture_output=True, text=True).stdout
    events = json.loads(out)["recording"]["events"]
    counts = {"jdk.ExecutionSample": collections.Counter(), "jdk.NativeMethodSample": collections.Counter()}
    for e in events:
        counts[e["type"]][component(e["values"]["stackTrace"]["frames"])] += 1
    for kind, title in (("jdk.ExecutionSample", "running Java code"), ("jdk.NativeMethodSample", "in native code")):
        total = sum(counts[kind].values())
        print(f"{title}: {total} samples")
        for name, n in counts[kind].most_common():
            print(f"  {100 * n / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
