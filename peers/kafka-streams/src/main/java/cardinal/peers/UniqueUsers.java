// Cardinal's peer in Kafka Streams: unique users per minute and per hour of event time, from the
// frames topic to a results topic as JSON ({"window":"minute","start":UNIX_SECONDS,"unique_users":N}),
// each window once, when final. Written the way the Kafka Streams developer guide teaches:
// TimestampExtractor, TimeWindows.ofSizeAndGrace, RocksDB window stores, suppress(untilWindowCloses).
//
// Distinct counting. The DSL has no distinct count, and aggregating each window into a Set<String>
// re-serializes the whole set into the store on every record (~45,000 uids per minute in the bench:
// quadratic). So, per window size, the distinct set is a windowed store keyed by uid (the "windowed
// store keyed by uid" dedup pattern):
//   1. frames re-keyed by uid -> windowed count(), caching disabled so that every update is forwarded;
//      the update with count 1 is a user's first frame in that window (a "first sighting");
//   2. first sightings -> one key per window size -> windowed count() -> suppress(untilWindowCloses)
//      -> the final number of distinct users of each window.
//
// Backfills. Kafka Streams has no end of input: suppress emits a window only once stream time (the
// largest timestamp seen) passes its end plus grace, so the last windows of a finite topic never come
// out. With --until-end this main() does what a user would do by hand: it waits (Admin client) until
// the application's group has committed the frames topic to its end offsets as of start and drained its
// repartition topics, then sends one "tick" record far in the future on a ticks topic that feeds step 2
// only, waits until that is processed too, and closes the app.
//
// Grace (--grace, default 5 s). Stream time is per task and not aligned across partitions or stream
// threads, so on a backfill the tasks drift apart in event time and a 5 s grace drops frames as late
// (see scripts/bench-peers.sh, which runs it at 60 s on one thread, Kafka Streams' default).
//
// Usage: UniqueUsers --brokers HOST:PORT --topic FRAMES --results-topic RESULTS [--app-id ID]
//                    [--ticks-topic TICKS] [--state-dir DIR] [--threads N] [--grace SECONDS] [--until-end]
package cardinal.peers;

import com.fasterxml.jackson.databind.JsonNode;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.WindowStore;

public final class UniqueUsers {
    static final AtomicLong RESULTS = new AtomicLong();

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = parse(args);
        String brokers = required(opt, "--brokers");
        String frames = required(opt, "--topic");
        String results = required(opt, "--results-topic");
        String appId = opt.getOrDefault("--app-id", "unique-users");
        String ticks = opt.getOrDefault("--ticks-topic", appId + "-ticks");
        boolean untilEnd = opt.containsKey("--until-end");
        Duration grace = Duration.ofSeconds(Long.parseLong(opt.getOrDefault("--grace", "5")));

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, opt.getOrDefault("--threads", "1"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, opt.getOrDefault("--state-dir", "/tmp/kafka-streams"));
        // The default is 30 s (at-least-once); results of a backfill would wait that long for each commit.
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers))) {
            createIfMissing(admin, ticks, partitions(admin, frames));
            createIfMissing(admin, results, 1);
            Map<TopicPartition, Long> framesEnd = untilEnd ? endOffsets(admin, frames) : Map.of();

            KafkaStreams streams = new KafkaStreams(topology(frames, ticks, results, grace), props);
            streams.setUncaughtExceptionHandler(e -> {
                e.printStackTrace();
                return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_APPLICATION;
            });
            Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
            long t0 = System.nanoTime();
            streams.start();
            if (!untilEnd) {
                Thread.currentThread().join();
            }
            waitDrained(admin, appId, framesEnd, streams);
            long read = System.nanoTime();
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of(
                    ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers,
                    ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class,
                    ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class))) {
                // Now: past every window of a backfill, and within what the broker accepts (by default a
                // timestamp at most 1 h ahead of its clock: log.message.timestamp.after.max.ms).
                long tickTs = System.currentTimeMillis() / 1000;
                producer.send(new ProducerRecord<>(ticks, 0, "tick", "{\"ts\":" + tickTs + "}")).get();
            }
            waitDrained(admin, appId, endOffsets(admin, ticks), streams);
            long done = System.nanoTime();
            System.err.printf("kafka-streams: read and counted everything in %.2f s, final results out %.2f s later; "
                    + "%d results, %d frames dropped as invalid, dropped-records metric (invalid + late) %s%n",
                    (read - t0) / 1e9, (done - read) / 1e9, RESULTS.get(), Frames.DROPPED.get(),
                    metricSum(streams, "dropped-records-total"));
            streams.close();
        }
    }

    static Topology topology(String framesTopic, String ticksTopic, String resultsTopic, Duration grace) {
        StreamsBuilder builder = new StreamsBuilder();
        Serde<JsonNode> json = Frames.serde();
        Consumed<byte[], JsonNode> consumed =
                Consumed.with(Serdes.ByteArray(), json).withTimestampExtractor(new FrameTimestampExtractor());

        // Valid frames re-keyed by uid (frames without a valid ts were dropped by the extractor already).
        KStream<String, String> byUid = builder.stream(framesTopic, consumed)
                .filter((key, frame) -> {
                    if (Frames.uid(frame) != null) {
                        return true;
                    }
                    Frames.DROPPED.incrementAndGet();
                    return false;
                })
                .map((key, frame) -> KeyValue.pair(Frames.uid(frame), ""))
                .repartition(Repartitioned.with(Serdes.String(), Serdes.String()).withName("by-uid"));
        KStream<byte[], String> ticks = builder.stream(ticksTopic, consumed).mapValues(tick -> "");

        for (String name : List.of("minute", "hour")) {
            TimeWindows windows = TimeWindows.ofSizeAndGrace(
                    name.equals("minute") ? Duration.ofMinutes(1) : Duration.ofHours(1), grace);
            // Step 1: a windowed store keyed by uid; count 1 = the user's first frame in the window.
            KStream<String, String> firstSightings = byUid
                    .groupByKey()
                    .windowedBy(windows)
                    .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("seen-" + name)
                            .withCachingDisabled())
                    .toStream()
                    .filter((userWindow, n) -> n == 1)
                    .map((userWindow, n) -> KeyValue.pair(name, userWindow.key()));
            // Step 2: count first sightings per window; emit each window once, when it closes.
            firstSightings
                    .merge(ticks.map((key, tick) -> KeyValue.pair(name, tick)))
                    .groupByKey(Grouped.with("users-" + name, Serdes.String(), Serdes.String()))
                    .windowedBy(windows)
                    .count(Materialized.as("users-" + name))
                    .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded())
                            .withName("final-" + name))
                    .toStream()
                    .map((window, n) -> {
                        long start = window.window().start() / 1000;
                        String line = "{\"window\":\"" + name + "\",\"start\":" + start + ",\"unique_users\":" + n + "}";
                        return KeyValue.pair(name + "/" + start, line);
                    })
                    .peek((key, line) -> {
                        RESULTS.incrementAndGet();
                        System.out.println(line);
                    })
                    .to(resultsTopic, Produced.with(Serdes.String(), Serdes.String()));
        }
        return builder.build();
    }

    /**
     * Waits until the group has committed every partition in {@code mustReach} up to the given offset,
     * and every partition of its repartition topics up to that partition's current end: then everything
     * read so far has been counted and its results produced.
     */
    static void waitDrained(Admin admin, String appId, Map<TopicPartition, Long> mustReach, KafkaStreams streams)
            throws Exception {
        while (true) {
            if (streams.state() == KafkaStreams.State.ERROR || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                throw new IllegalStateException("Kafka Streams stopped: " + streams.state());
            }
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
            Map<TopicPartition, Long> target = new HashMap<>(mustReach);
            for (String topic : admin.listTopics().names().get()) {
                if (topic.startsWith(appId + "-") && topic.endsWith("-repartition")) {
                    target.putAll(endOffsets(admin, topic));
                }
            }
            boolean drained = true;
            for (Map.Entry<TopicPartition, Long> e : target.entrySet()) {
                OffsetAndMetadata c = committed.get(e.getKey());
                if (e.getValue() > 0 && (c == null || c.offset() < e.getValue())) {
                    drained = false;
                    break;
                }
            }
            if (drained) {
                return;
            }
            Thread.sleep(200);
        }
    }

    static Map<TopicPartition, Long> endOffsets(Admin admin, String topic) throws Exception {
        Map<TopicPartition, OffsetSpec> specs = new HashMap<>();
        for (int p = 0; p < partitions(admin, topic); p++) {
            specs.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        Map<TopicPartition, Long> ends = new HashMap<>();
        admin.listOffsets(specs).all().get().forEach((tp, info) -> ends.put(tp, info.offset()));
        return ends;
    }

    static int partitions(Admin admin, String topic) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        return d.partitions().size();
    }

    static void createIfMissing(Admin admin, String topic, int partitions) throws Exception {
        Set<String> names = admin.listTopics().names().get();
        if (!names.contains(topic)) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof org.apache.kafka.common.errors.TopicExistsException)) {
                    throw e;
                }
            }
        }
    }

    static double metricSum(KafkaStreams streams, String name) {
        double sum = 0;
        for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
            if (e.getKey().name().equals(name) && e.getValue().metricValue() instanceof Number n) {
                sum += n.doubleValue();
            }
        }
        return sum;
    }

    static Map<String, String> parse(String[] args) {
        Map<String, String> opt = new HashMap<>();
        List<String> rest = new ArrayList<>(List.of(args));
        while (!rest.isEmpty()) {
            String a = rest.remove(0);
            if (a.equals("--until-end")) {
                opt.put(a, "");
            } else if (a.startsWith("--") && !rest.isEmpty()) {
                opt.put(a, rest.remove(0));
            } else {
                throw new IllegalArgumentException("unexpected argument " + a + "; see the header of UniqueUsers.java");
            }
        }
        return opt;
    }

    static String required(Map<String, String> opt, String name) {
        String v = opt.get(name);
        if (v == null) {
            throw new IllegalArgumentException(name + " is required");
        }
        return v;
    }
}
