// How the Flink job reads a frame: Jackson parses the record's value, and only the two root fields
// that count are kept, as (uid, ts in unix seconds). A frame that is not a JSON object, or lacks a
// root string uid or a valid root ts (an integer, or a string of 1 to 18 digits), becomes ("", -1):
// the job drops and counts those, as Cardinal counts its rejects.
package cardinal.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;

public final class FrameSchema implements DeserializationSchema<Tuple2<String, Long>> {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    static final Tuple2<String, Long> INVALID = Tuple2.of("", -1L);

    @Override
    public Tuple2<String, Long> deserialize(byte[] message) {
        if (message == null) {
            return INVALID;
        }
        JsonNode frame;
        try {
            frame = MAPPER.readTree(message);
        } catch (IOException e) {
            return INVALID;
        }
        if (frame == null || !frame.isObject()) {
            return INVALID;
        }
        JsonNode uid = frame.get("uid");
        long ts = ts(frame.get("ts"));
        if (uid == null || !uid.isTextual() || ts < 0) {
            return INVALID;
        }
        return Tuple2.of(uid.textValue(), ts);
    }

    static long ts(JsonNode ts) {
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

    @Override
    public boolean isEndOfStream(Tuple2<String, Long> next) {
        return false;
    }

    @Override
    public TypeInformation<Tuple2<String, Long>> getProducedType() {
        return Types.TUPLE(Types.STRING, Types.LONG);
    }
}
