// Cardinal's peer in Flink 2.x (DataStream API): unique users per minute and per hour of event time,
// from the frames topic read from its start offsets up to its end offsets as of start (a bounded
// KafkaSource, so a backfill ends), with a bounded-out-of-orderness watermark of 5 s per partition,
// exact distinct counting (an AggregateFunction whose accumulator is the window's set of uids, kept
// on the heap by the default HashMap state backend), in a local MiniCluster. Prints one JSON line
// per window on stdout: {"window":"minute","start":UNIX_SECONDS,"unique_users":N}; at the end of
// input the watermark goes to +infinity, so every window fires once, final.
//
// Usage: UniqueUsersJob --brokers HOST:PORT --topic FRAMES [--group ID]
package cardinal.peers;

import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFilterFunction;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

public final class UniqueUsersJob {
    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            opt.put(args[i], args[i + 1]);
        }
        String brokers = opt.get("--brokers");
        String topic = opt.get("--topic");
        if (brokers == null || topic == null) {
            throw new IllegalArgumentException("usage: UniqueUsersJob --brokers HOST:PORT --topic FRAMES [--group ID]");
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        KafkaSource<Tuple2<String, Long>> source = KafkaSource.<Tuple2<String, Long>>builder()
                .setBootstrapServers(brokers)
                .setTopics(topic)
                .setGroupId(opt.getOrDefault("--group", "unique-users-flink"))
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setBounded(OffsetsInitializer.latest())
                .setDeserializer(KafkaRecordDeserializationSchema.valueOnly(new FrameSchema()))
                .build();
        // Watermarks generated in the source, per Kafka partition (the documented way for Kafka).
        WatermarkStrategy<Tuple2<String, Long>> watermarks = WatermarkStrategy
                .<Tuple2<String, Long>>forBoundedOutOfOrderness(Duration.ofSeconds(5))
                .withTimestampAssigner((click, recordTs) -> click.f1 < 0 ? Long.MIN_VALUE : click.f1 * 1000);

        DataStream<Tuple2<String, Long>> clicks = env
                .fromSource(source, watermarks, "frames")
                .filter(new DropInvalid())
                .name("drop-invalid");

        OutputTag<Tuple2<String, Long>> late = new OutputTag<>("late", clicks.getType());
        SingleOutputStreamOperator<String> minutes = uniqueUsers(clicks, "minute", Duration.ofMinutes(1), late);
        SingleOutputStreamOperator<String> hours = uniqueUsers(clicks, "hour", Duration.ofHours(1), late);
        minutes.union(hours).print().setParallelism(1);
        // Frames that came after their window had fired (none should, with in-order data): counted.
        minutes.getSideOutput(late).union(hours.getSideOutput(late))
                .filter(new CountLate()).sinkTo(new DiscardingSink<>());

        JobExecutionResult result = env.execute("unique users per minute and hour");
        Long dropped = result.getAccumulatorResult("dropped");
        Long lateFrames = result.getAccumulatorResult("late");
        System.err.printf("flink: done in %.2f s (job); %d frames dropped as invalid, %d late frames dropped%n",
                result.getNetRuntime() / 1000.0, dropped == null ? 0 : dropped, lateFrames == null ? 0 : lateFrames);
    }

    /** One tumbling event-time window size: the distinct uids of each window, counted exactly. */
    static SingleOutputStreamOperator<String> uniqueUsers(DataStream<Tuple2<String, Long>> clicks, String name, Duration size,
            OutputTag<Tuple2<String, Long>> late) {
        return clicks
                .keyBy(click -> name) // one global count per window: a single key
                .window(TumblingEventTimeWindows.of(size))
                .sideOutputLateData(late)
                .aggregate(new DistinctUids(), new Format(name))
                .name("unique-users-per-" + name);
    }

    /** Drops the frames FrameSchema could not read, counting them. */
    static final class DropInvalid extends RichFilterFunction<Tuple2<String, Long>> {
        private final LongCounter dropped = new LongCounter();

        @Override
        public void open(OpenContext context) {
            getRuntimeContext().addAccumulator("dropped", dropped);
        }

        @Override
        public boolean filter(Tuple2<String, Long> click) {
            if (click.f1 < 0) {
                dropped.add(1);
                return false;
            }
            return true;
        }
    }

    /** Counts frames that reached a window after it had fired (the window operator's late output). */
    static final class CountLate extends RichFilterFunction<Tuple2<String, Long>> {
        private final LongCounter late = new LongCounter();

        @Override
        public void open(OpenContext context) {
            getRuntimeContext().addAccumulator("late", late);
        }

        @Override
        public boolean filter(Tuple2<String, Long> click) {
            late.add(1);
            return false;
        }
    }

    /** The exact set of uids seen in a window; its size is the window's unique users. */
    static final class DistinctUids implements AggregateFunction<Tuple2<String, Long>, HashSet<String>, Long> {
        @Override
        public HashSet<String> createAccumulator() {
            return new HashSet<>();
        }

        @Override
        public HashSet<String> add(Tuple2<String, Long> click, HashSet<String> uids) {
            uids.add(click.f0);
            return uids;
        }

        @Override
        public Long getResult(HashSet<String> uids) {
            return (long) uids.size();
        }

        @Override
        public HashSet<String> merge(HashSet<String> a, HashSet<String> b) {
            a.addAll(b);
            return a;
        }
    }

    /** Formats a window's count as the JSON line Cardinal's peers print. */
    static final class Format extends ProcessWindowFunction<Long, String, String, TimeWindow> {
        private final String name;

        Format(String name) {
            this.name = name;
        }

        @Override
        public void process(String key, Context context, Iterable<Long> counts, Collector<String> out) {
            long start = context.window().getStart() / 1000;
            out.collect("{\"window\":\"" + name + "\",\"start\":" + start + ",\"unique_users\":"
                    + counts.iterator().next() + "}");
        }
    }
}
