// Event time for Kafka Streams: the frame's root ts (unix seconds) in milliseconds, as the
// TimestampExtractor section of the Kafka Streams developer guide teaches (the value is already
// deserialized by the source's Serde, here a Jackson tree). A frame without a valid ts gets -1,
// which Kafka Streams drops (and counts in its dropped-records metric); we count it too.
package cardinal.peers;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;

public final class FrameTimestampExtractor implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
        long ts = Frames.ts((JsonNode) record.value());
        if (ts < 0) {
            Frames.DROPPED.incrementAndGet();
            return -1;
        }
        return ts * 1000;
    }
}
