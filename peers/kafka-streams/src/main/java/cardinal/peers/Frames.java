// The frame format of Cardinal's topic, read with Jackson: a Serde that parses each record's value into
// a JsonNode tree once, and the two root fields that count (uid: a string; ts: unix seconds, an integer
// or a string of digits). Frames without them are dropped and counted here, as Cardinal counts rejects.
package cardinal.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

final class Frames {
    static final ObjectMapper MAPPER = new ObjectMapper();

    /** Frames that were not JSON objects, or had no root string uid or no valid root ts. */
    static final AtomicLong DROPPED = new AtomicLong();

    private Frames() {}

    /** JSON values as Jackson trees; a value that is not JSON deserializes to null (dropped later). */
    static Serde<JsonNode> serde() {
        Serializer<JsonNode> serializer = (topic, node) -> {
            try {
                return node == null ? null : MAPPER.writeValueAsBytes(node);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        };
        Deserializer<JsonNode> deserializer = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            try {
                JsonNode node = MAPPER.readTree(bytes);
                return node != null && node.isObject() ? node : null;
            } catch (IOException e) {
                return null;
            }
        };
        return Serdes.serdeFrom(serializer, deserializer);
    }

    /** The root uid, or null. */
    static String uid(JsonNode frame) {
        JsonNode uid = frame == null ? null : frame.get("uid");
        return uid != null && uid.isTextual() ? uid.textValue() : null;
    }

    /** The root ts in unix seconds (an integer, or a string of 1 to 18 digits), or -1. */
    static long ts(JsonNode frame) {
        JsonNode ts = frame == null ? null : frame.get("ts");
        if (ts == null) {
            return -1;
        }
        if (ts.isIntegralNumber() && ts.canConvertToLong()) {
            return ts.longValue() >= 0 ? ts.longValue() : -1;
        }
        if (ts.isTextual()) {
            String s = ts.textValue();
            if (s.isEmpty() || s.length() > 18) {
                return -1;
            }
            for (int i = 0; i < s.length(); i++) {
                if (s.charAt(i) < '0' || s.charAt(i) > '9') {
                    return -1;
                }
            }
            return Long.parseLong(s);
        }
        return -1;
    }
}
