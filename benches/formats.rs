//! JSON against binary formats for Cardinal's frames (docs/REPORT.md, section 1).
//!
//! The same generated frames (`cardinal gen`, default ~2 KB and a ~200 B variant)
//! are encoded in each format; for each this measures the bytes per frame, raw and
//! after Kafka-style batch compression (lz4, zstd), the producer's encoding cost,
//! and the cost of getting `uid` and `ts` back out, with the format's well-kept
//! crate. Every round runs every case once, in turn, so that the machine's noise
//! falls on all of them alike; the table gives medians over the rounds.
//!
//! What a frame is, in every format: the root `uid` and `ts` plus every other
//! root member with its nested value as real structure (objects keep their order
//! and their duplicate keys), except for the two "envelope" rows, which carry the
//! other members as one JSON blob (the cheapest migration: keep the payload, add a
//! binary header with what is counted). FlatBuffers is only measured as such an
//! envelope: its recursive tables need generated code (flatc), which this project
//! does not want in its build; Protobuf is measured both ways.
//!
//! Correctness: before timing, every decoder's (uid, ts) for every frame is
//! compared with the generator's truth and with serde_json's reading of the
//! original JSON (an implementation independent of Cardinal's parser); any
//! difference aborts the run.
//!
//! Usage: `cargo bench --bench formats -- [--frames-2k N] [--rounds R]
//! [--sizes 2000,200] [--tsv FILE]`. The batch size for compression is 1 MB.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use cardinal::generator::{FrameGen, GenConfig, Truth};
use cardinal::parser::parse_frame;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// ---------------------------------------------------------------------------
// The frame's content, independent of any format.

/// A JSON value that keeps object order and duplicate keys, as the frames have them.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(i64::try_from(n).map_or(Node::Float(n as f64), Node::Int))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
                Ok(Node::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry::<String, Node>()? {
                    v.push(kv);
                }
                Ok(Node::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(n) => s.serialize_i64(*n),
            Node::Float(x) => s.serialize_f64(*x),
            Node::Str(x) => s.serialize_str(x),
            Node::Arr(v) => {
                let mut q = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    q.serialize_element(x)?;
                }
                q.end()
            }
            Node::Obj(m) => Members(m).serialize(s),
        }
    }
}

/// Object members, in order, duplicates kept.
struct Members<'a>(&'a [(String, Node)]);

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One frame: what is counted, the rest, and the original root (for JSON as
/// today); and the frame as a producer using Protobuf or Avro would hold it
/// (prost's structs, apache-avro's Value), so that encoding is timed from each
/// format's own in-memory form.
struct Frame {
    uid: String,
    ts: i64,
    rest: Vec<(String, Node)>,
    original: Node,
    pb: pb::Frame,
    avro: apache_avro::types::Value,
}

impl Frame {
    fn from_json(line: &[u8]) -> Frame {
        let original: Node = serde_json::from_slice(line).expect("generated frames are JSON");
        let Node::Obj(members) = &original else {
            panic!("a frame is an object")
        };
        let (mut uid, mut ts, mut rest) = (None, None, Vec::new());
        for (k, v) in members {
            match (k.as_str(), v) {
                ("uid", Node::Str(u)) if uid.is_none() => uid = Some(u.clone()),
                ("ts", Node::Int(t)) if ts.is_none() => ts = Some(*t),
                _ => rest.push((k.clone(), v.clone())),
            }
        }
        let (uid, ts) = (uid.expect("root uid"), ts.expect("root ts"));
        let pb = pb::Frame {
            uid: uid.clone(),
            ts,
            rest: to_pb_members(&rest),
        };
        let avro = to_avro(&uid, ts, &rest);
        Frame {
            uid,
            ts,
            rest,
            original,
            pb,
            avro,
        }
    }
}

/// The frame as one map with `uid` and `ts` first (JSON, MessagePack, CBOR).
struct UidFirst<'a>(&'a Frame);

impl Serialize for UidFirst<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let mut m = s.serialize_map(Some(2 + f.rest.len()))?;
        m.serialize_entry("uid", &f.uid)?;
        m.serialize_entry("ts", &f.ts)?;
        for (k, v) in &f.rest {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// What the serde decoders extract; unknown members are skipped (and, for
/// self-describing formats, walked through to be skipped).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    ts: i64,
}

#[derive(Deserialize)]
struct HeadOwned {
    uid: String,
    ts: i64,
}

// ---------------------------------------------------------------------------
// Protobuf (prost, derived messages: no protoc).

mod pb {
    /// The frame with its nested values as real messages.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Frame {
        #[prost(string, tag = "1")]
        pub uid: String,
        #[prost(int64, tag = "2")]
        pub ts: i64,
        #[prost(message, repeated, tag = "3")]
        pub rest: Vec<Member>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Member {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Node>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub kind: Option<Kind>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(bool, tag = "1")]
        Null(bool),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(sint64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Float(f64),
        #[prost(string, tag = "5")]
        Str(String),
        #[prost(message, tag = "6")]
        Arr(List),
        #[prost(message, tag = "7")]
        Obj(Object),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct List {
        #[prost(message, repeated, tag = "1")]
        pub items: Vec<Node>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Object {
        #[prost(message, repeated, tag = "1")]
        pub members: Vec<Member>,
    }
    /// The envelope: the other members as one JSON object.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Envelope {
        #[prost(string, tag = "1")]
        pub uid: String,
        #[prost(int64, tag = "2")]
        pub ts: i64,
        #[prost(bytes = "vec", tag = "3")]
        pub rest_json: Vec<u8>,
    }
    /// What a consumer that counts declares: fields 1 and 2 only; prost skips
    /// field 3 by its length, without looking inside.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Head {
        #[prost(string, tag = "1")]
        pub uid: String,
        #[prost(int64, tag = "2")]
        pub ts: i64,
    }
}

fn to_pb_node(n: &Node) -> pb::Node {
    use pb::Kind;
    let kind = match n {
        Node::Null => Kind::Null(true),
        Node::Bool(b) => Kind::Bool(*b),
        Node::Int(i) => Kind::Int(*i),
        Node::Float(x) => Kind::Float(*x),
        Node::Str(s) => Kind::Str(s.clone()),
        Node::Arr(v) => Kind::Arr(pb::List {
            items: v.iter().map(to_pb_node).collect(),
        }),
        Node::Obj(m) => Kind::Obj(pb::Object {
            members: to_pb_members(m),
        }),
    };
    pb::Node { kind: Some(kind) }
}

fn to_pb_members(m: &[(String, Node)]) -> Vec<pb::Member> {
    m.iter()
        .map(|(k, v)| pb::Member {
            key: k.clone(),
            value: Some(to_pb_node(v)),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Avro (apache-avro), with a recursive schema.

const AVRO_SCHEMA: &str = r#"
{"type": "record", "name": "Frame", "fields": [
  {"name": "uid", "type": "string"},
  {"name": "ts", "type": "long"},
  {"name": "rest", "type": {"type": "array", "items":
    {"type": "record", "name": "Member", "fields": [
      {"name": "key", "type": "string"},
      {"name": "value", "type": {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": ["null", "boolean", "long", "double", "string",
          {"type": "record", "name": "Arr", "fields": [
            {"name": "items", "type": {"type": "array", "items": "Node"}}]},
          {"type": "record", "name": "Obj", "fields": [
            {"name": "members", "type": {"type": "array", "items": "Member"}}]}
        ]}]}}]}}}
]}"#;

fn to_avro_node(n: &Node) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    let v = match n {
        Node::Null => A::Union(0, Box::new(A::Null)),
        Node::Bool(b) => A::Union(1, Box::new(A::Boolean(*b))),
        Node::Int(i) => A::Union(2, Box::new(A::Long(*i))),
        Node::Float(x) => A::Union(3, Box::new(A::Double(*x))),
        Node::Str(s) => A::Union(4, Box::new(A::String(s.clone()))),
        Node::Arr(v) => A::Union(
            5,
            Box::new(A::Record(vec![(
                "items".into(),
                A::Array(v.iter().map(to_avro_node).collect()),
            )])),
        ),
        Node::Obj(m) => A::Union(
            6,
            Box::new(A::Record(vec![("members".into(), to_avro_members(m))])),
        ),
    };
    A::Record(vec![("v".into(), v)])
}

fn to_avro_members(m: &[(String, Node)]) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    A::Array(
        m.iter()
            .map(|(k, v)| {
                A::Record(vec![
                    ("key".into(), A::String(k.clone())),
                    ("value".into(), to_avro_node(v)),
                ])
            })
            .collect(),
    )
}

fn to_avro(uid: &str, ts: i64, rest: &[(String, Node)]) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    A::Record(vec![
        ("uid".into(), A::String(uid.to_owned())),
        ("ts".into(), A::Long(ts)),
        ("rest".into(), to_avro_members(rest)),
    ])
}

/// Avro's binary encoding puts the record's fields in schema order, so `uid`
/// and `ts` are the first bytes: a zig-zag varint length, the string, a
/// zig-zag varint. This reads just those, as a hand-written consumer would.
fn avro_prefix(b: &[u8]) -> Option<(&str, i64)> {
    fn varint(b: &[u8], at: &mut usize) -> Option<i64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        None
    }
    let mut at = 0;
    let len = usize::try_from(varint(b, &mut at)?).ok()?;
    let uid = std::str::from_utf8(b.get(at..at + len)?).ok()?;
    at += len;
    Some((uid, varint(b, &mut at)?))
}

// ---------------------------------------------------------------------------
// FlatBuffers: table Frame { uid: string; ts: long; rest_json: [ubyte]; },
// written by hand as flatc would generate it.

mod fb {
    use flatbuffers::{
        FlatBufferBuilder, Follow, ForwardsUOffset, InvalidFlatbuffer, Table, VOffsetT, Vector,
        Verifiable, Verifier,
    };

    #[derive(Copy, Clone)]
    pub struct Frame<'a> {
        tab: Table<'a>,
    }
    impl<'a> Follow<'a> for Frame<'a> {
        type Inner = Frame<'a>;
        unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
            // SAFETY: the caller (flatbuffers::root) has verified the buffer, or
            // root_unchecked's caller vouches for it.
            Frame {
                tab: unsafe { Table::new(buf, loc) },
            }
        }
    }
    const VT_UID: VOffsetT = 4;
    const VT_TS: VOffsetT = 6;
    const VT_REST: VOffsetT = 8;
    impl<'a> Frame<'a> {
        pub fn uid(&self) -> Option<&'a str> {
            // SAFETY: verified (or vouched for) as a Frame table.
            unsafe { self.tab.get::<ForwardsUOffset<&str>>(VT_UID, None) }
        }
        pub fn ts(&self) -> i64 {
            // SAFETY: as above.
            unsafe { self.tab.get::<i64>(VT_TS, Some(0)).unwrap_or(0) }
        }
    }
    impl Verifiable for Frame<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<&str>>("uid", VT_UID, true)?
                .visit_field::<i64>("ts", VT_TS, false)?
                .visit_field::<ForwardsUOffset<Vector<'_, u8>>>("rest_json", VT_REST, false)?
                .finish();
            Ok(())
        }
    }
    pub fn build(b: &mut FlatBufferBuilder, uid: &str, ts: i64, rest_json: &[u8]) {
        b.reset();
        let uid = b.create_string(uid);
        let rest = b.create_vector(rest_json);
        let t = b.start_table();
        b.push_slot_always(VT_TS, ts);
        b.push_slot_always(VT_UID, uid);
        b.push_slot_always(VT_REST, rest);
        let t = b.end_table(t);
        b.finish_minimal(t);
    }
}

// ---------------------------------------------------------------------------
// The formats and their decoders.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Format {
    JsonToday,
    JsonUidFirst,
    MsgPack,
    Cbor,
    Avro,
    Protobuf,
    ProtobufEnvelope,
    FlatBuffersEnvelope,
    FixedRecord,
    KeyTimestamp,
}

impl Format {
    const ALL: [Format; 10] = [
        Format::JsonToday,
        Format::JsonUidFirst,
        Format::MsgPack,
        Format::Cbor,
        Format::Avro,
        Format::Protobuf,
        Format::ProtobufEnvelope,
        Format::FlatBuffersEnvelope,
        Format::FixedRecord,
        Format::KeyTimestamp,
    ];
    fn name(self) -> &'static str {
        match self {
            Format::JsonToday => "JSON as today",
            Format::JsonUidFirst => "JSON, uid and ts first",
            Format::MsgPack => "MessagePack",
            Format::Cbor => "CBOR",
            Format::Avro => "Avro",
            Format::Protobuf => "Protobuf",
            Format::ProtobufEnvelope => "Protobuf envelope (rest as JSON)",
            Format::FlatBuffersEnvelope => "FlatBuffers envelope (rest as JSON)",
            Format::FixedRecord => "fixed record (i64 ts + uid)",
            Format::KeyTimestamp => "Kafka key + record timestamp",
        }
    }
}

/// The encoder's reusable state: schemas and builders are set up once, as a
/// producer would.
struct Encoders {
    avro: apache_avro::writer::datum::GenericDatumWriter<'static>,
    fbb: flatbuffers::FlatBufferBuilder<'static>,
}

impl Encoders {
    fn new(schema: &'static apache_avro::Schema) -> Encoders {
        Encoders {
            avro: apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                .build()
                .expect("Avro writer"),
            fbb: flatbuffers::FlatBufferBuilder::with_capacity(4096),
        }
    }

    /// Encodes one frame from its in-memory form; `out` is cleared first.
    fn encode(&mut self, fmt: Format, f: &Frame, out: &mut Vec<u8>) {
        out.clear();
        match fmt {
            Format::JsonToday => serde_json::to_writer(&mut *out, &f.original).unwrap(),
            Format::JsonUidFirst => serde_json::to_writer(&mut *out, &UidFirst(f)).unwrap(),
            Format::MsgPack => rmp_serde::encode::write(out, &UidFirst(f)).unwrap(),
            Format::Cbor => ciborium::into_writer(&UidFirst(f), &mut *out).unwrap(),
            // apache-avro's default: the value is validated against the schema.
            Format::Avro => {
                self.avro.write_value_ref(out, &f.avro).unwrap();
            }
            Format::Protobuf => prost::Message::encode(&f.pb, out).unwrap(),
            Format::ProtobufEnvelope => {
                let m = pb::Envelope {
                    uid: f.uid.clone(),
                    ts: f.ts,
                    rest_json: serde_json::to_vec(&Members(&f.rest)).unwrap(),
                };
                prost::Message::encode(&m, out).unwrap();
            }
            Format::FlatBuffersEnvelope => {
                let rest = serde_json::to_vec(&Members(&f.rest)).unwrap();
                fb::build(&mut self.fbb, &f.uid, f.ts, &rest);
                out.extend_from_slice(self.fbb.finished_data());
            }
            Format::FixedRecord => {
                out.extend_from_slice(&f.ts.to_le_bytes());
                out.extend_from_slice(f.uid.as_bytes());
            }
            // The key is the uid's bytes; the timestamp travels in the record
            // header (8 bytes counted here; a v2 batch stores it as a varint delta).
            Format::KeyTimestamp => out.extend_from_slice(f.uid.as_bytes()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Decoder {
    Cardinal,
    SerdeJson,
    SonicRs,
    RmpSerde,
    RmpPrefix,
    Ciborium,
    AvroSerde,
    AvroPrefix,
    ProstHead,
    ProstFull,
    FlatBuffers,
    FlatBuffersUnchecked,
    Fixed,
    KeyTs,
    MemchrFloor,
}

impl Decoder {
    fn name(self) -> &'static str {
        match self {
            Decoder::Cardinal => "cardinal::parser (validates all)",
            Decoder::SerdeJson => "serde_json, struct of 2 (validates all)",
            Decoder::SonicRs => "sonic-rs get_many (lazy)",
            Decoder::RmpSerde => "rmp-serde, struct of 2",
            Decoder::RmpPrefix => "rmp, first 2 entries only",
            Decoder::Ciborium => "ciborium, struct of 2",
            Decoder::AvroSerde => "apache-avro read_value (whole record)",
            Decoder::AvroPrefix => "first 2 fields by hand",
            Decoder::ProstHead => "prost, message of fields 1-2",
            Decoder::ProstFull => "prost, whole message",
            Decoder::FlatBuffers => "flatbuffers::root (verified)",
            Decoder::FlatBuffersUnchecked => "flatbuffers::root_unchecked",
            Decoder::Fixed => "from_le_bytes + from_utf8",
            Decoder::KeyTs => "key from_utf8 + timestamp",
            Decoder::MemchrFloor => "memchr floor (every byte once)",
        }
    }

    fn for_format(fmt: Format) -> &'static [Decoder] {
        match fmt {
            Format::JsonToday => &[
                Decoder::Cardinal,
                Decoder::SerdeJson,
                Decoder::SonicRs,
                Decoder::MemchrFloor,
            ],
            Format::JsonUidFirst => &[Decoder::Cardinal, Decoder::SerdeJson, Decoder::SonicRs],
            Format::MsgPack => &[Decoder::RmpSerde, Decoder::RmpPrefix],
            Format::Cbor => &[Decoder::Ciborium],
            Format::Avro => &[Decoder::AvroSerde, Decoder::AvroPrefix],
            Format::Protobuf => &[Decoder::ProstHead, Decoder::ProstFull],
            Format::ProtobufEnvelope => &[Decoder::ProstHead],
            Format::FlatBuffersEnvelope => &[Decoder::FlatBuffers, Decoder::FlatBuffersUnchecked],
            Format::FixedRecord => &[Decoder::Fixed],
            Format::KeyTimestamp => &[Decoder::KeyTs],
        }
    }
}

/// What the decoders set up once: a consumer would too.
struct Decoders {
    avro: apache_avro::reader::datum::GenericDatumReader<'static>,
    sonic: sonic_rs::PointerTree,
}

impl Decoders {
    fn new(schema: &'static apache_avro::Schema) -> Decoders {
        let mut sonic = sonic_rs::PointerTree::new();
        sonic.add_path(["uid"].iter());
        sonic.add_path(["ts"].iter());
        Decoders {
            avro: apache_avro::reader::datum::GenericDatumReader::builder(schema)
                .build()
                .expect("Avro reader"),
            sonic,
        }
    }
}

/// Calls `sink` with the (uid, ts) of one encoded frame. `key_ts` is the record
/// timestamp for [`Format::KeyTimestamp`].
#[inline(always)]
fn decode(d: Decoder, b: &[u8], key_ts: i64, ctx: &Decoders, sink: &mut impl FnMut(&str, i64)) {
    match d {
        Decoder::Cardinal => {
            let f = parse_frame(b).expect("valid frame");
            sink(std::str::from_utf8(&f.uid).unwrap_or(""), f.ts);
        }
        Decoder::SerdeJson => {
            let h: Head = serde_json::from_slice(b).expect("valid frame");
            sink(&h.uid, h.ts);
        }
        Decoder::SonicRs => {
            let v = sonic_rs::get_many(b, &ctx.sonic).expect("valid frame");
            let uid: Cow<str> = sonic_rs::from_str(v[0].as_ref().unwrap().as_raw_str()).unwrap();
            let ts: i64 = v[1].as_ref().unwrap().as_raw_str().parse().unwrap();
            sink(&uid, ts);
        }
        Decoder::RmpSerde => {
            let h: Head = rmp_serde::from_slice(b).expect("valid frame");
            sink(&h.uid, h.ts);
        }
        Decoder::RmpPrefix => {
            let mut rd = b;
            let n = rmp::decode::read_map_len(&mut rd).unwrap();
            assert!(n >= 2);
            let (k, rd) = rmp::decode::read_str_from_slice(rd).unwrap();
            assert_eq!(k, "uid");
            let (uid, rd) = rmp::decode::read_str_from_slice(rd).unwrap();
            let (k, mut rd) = rmp::decode::read_str_from_slice(rd).unwrap();
            assert_eq!(k, "ts");
            let ts: i64 = rmp::decode::read_int(&mut rd).unwrap();
            sink(uid, ts);
        }
        Decoder::Ciborium => {
            let h: HeadOwned = ciborium::from_reader(b).expect("valid frame");
            sink(&h.uid, h.ts);
        }
        Decoder::AvroSerde => {
            // Its serde reader cannot skip a field (`deserialize_ignored_any` is
            // unsupported), so the whole record is decoded into a Value.
            use apache_avro::types::Value as A;
            let v = ctx.avro.read_value(&mut &b[..]).expect("valid frame");
            let A::Record(fields) = v else {
                panic!("a Frame record")
            };
            match (&fields[0].1, &fields[1].1) {
                (A::String(uid), A::Long(ts)) => sink(uid, *ts),
                _ => panic!("uid and ts first"),
            }
        }
        Decoder::AvroPrefix => {
            let (uid, ts) = avro_prefix(b).expect("valid frame");
            sink(uid, ts);
        }
        Decoder::ProstHead => {
            let h: pb::Head = prost::Message::decode(b).expect("valid frame");
            sink(&h.uid, h.ts);
        }
        Decoder::ProstFull => {
            let f: pb::Frame = prost::Message::decode(b).expect("valid frame");
            sink(&f.uid, f.ts);
        }
        Decoder::FlatBuffers => {
            let f = flatbuffers::root::<fb::Frame>(b).expect("valid frame");
            sink(f.uid().unwrap(), f.ts());
        }
        Decoder::FlatBuffersUnchecked => {
            // SAFETY: these buffers were built by fb::build above and verified
            // by the correctness pass before any timing.
            let f = unsafe { flatbuffers::root_unchecked::<fb::Frame>(b) };
            sink(f.uid().unwrap(), f.ts());
        }
        Decoder::Fixed => {
            let ts = i64::from_le_bytes(b[..8].try_into().unwrap());
            sink(std::str::from_utf8(&b[8..]).expect("UTF-8 uid"), ts);
        }
        Decoder::KeyTs => sink(std::str::from_utf8(b).expect("UTF-8 uid"), key_ts),
        Decoder::MemchrFloor => {
            // Reads every byte once (no frame contains a newline) and extracts nothing.
            sink("", memchr::memchr(b'\n', b).map_or(0, |i| i as i64));
        }
    }
}

// ---------------------------------------------------------------------------
// Measurement.

struct Args {
    frames_2k: usize,
    rounds: usize,
    sizes: Vec<usize>,
    tsv: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        frames_2k: 4000,
        rounds: 7,
        sizes: vec![2000, 200],
        tsv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--frames-2k" => a.frames_2k = val().parse().expect("--frames-2k N"),
            "--rounds" => a.rounds = val().parse().expect("--rounds R"),
            "--sizes" => {
                a.sizes = val()
                    .split(',')
                    .map(|s| s.parse().expect("--sizes 2000,200"))
                    .inspect(|&s| assert!(s >= 50, "--sizes: 50 bytes at least"))
                    .collect()
            }
            "--tsv" => a.tsv = Some(val()),
            "--bench" => {} // cargo bench passes it
            _ => panic!("unknown argument {x}; see benches/formats.rs"),
        }
    }
    a
}

/// Bytes per frame after compressing batches of about `batch` bytes of
/// length-prefixed records, as a Kafka producer compresses a record batch.
fn compressed_per_frame(frames: &[Vec<u8>], batch: usize) -> (f64, f64) {
    let (mut lz4, mut zstd) = (0usize, 0usize);
    let mut buf = Vec::with_capacity(batch + 8192);
    let mut flush = |buf: &mut Vec<u8>| {
        if buf.is_empty() {
            return;
        }
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(buf).unwrap();
        lz4 += enc.finish().unwrap().len();
        // Kafka's default zstd level is 3.
        zstd += zstd::bulk::compress(buf, 3).unwrap().len();
        buf.clear();
    };
    for f in frames {
        let mut n = f.len() as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            buf.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                break;
            }
        }
        buf.extend_from_slice(f);
        if buf.len() >= batch {
            flush(&mut buf);
        }
    }
    flush(&mut buf);
    let n = frames.len() as f64;
    (lz4 as f64 / n, zstd as f64 / n)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `pass` (one pass over all frames), repeated until at least 30 ms have
/// gone by; returns seconds per pass.
fn time_passes(mut pass: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0u32;
    loop {
        pass();
        n += 1;
        if t.elapsed() >= Duration::from_millis(30) {
            return t.elapsed().as_secs_f64() / f64::from(n);
        }
    }
}

struct Row {
    size: usize,
    frames: usize,
    format: Format,
    decoder: Option<Decoder>,
    raw: f64,
    lz4: f64,
    zstd: f64,
    json_bytes: f64,
    encode: Vec<f64>,
    decode: Vec<f64>,
}

fn main() {
    let a = args();
    let mut rows: Vec<Row> = Vec::new();
    let schema: &'static apache_avro::Schema = Box::leak(Box::new(
        apache_avro::Schema::parse_str(AVRO_SCHEMA).expect("Avro schema"),
    ));
    let mut enc = Encoders::new(schema);
    let dec = Decoders::new(schema);
    for &size in &a.sizes {
        // The same bytes of JSON at every size: 4000 frames of 2 KB, 40000 of 200 B.
        let n = (a.frames_2k * 2000 / size).max(1);
        let cfg = GenConfig {
            frames: n as u64,
            frame_bytes: size,
            ..GenConfig::default()
        };
        let (mut lines, mut truth) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for g in FrameGen::new(&cfg) {
            let Truth::Valid { uid, ts } = g.truth else {
                unreachable!("the defaults generate valid frames only")
            };
            lines.push(g.line);
            truth.push((uid, ts));
        }
        let frames: Vec<Frame> = lines.iter().map(|l| Frame::from_json(l)).collect();
        let json_bytes = lines.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;

        // Encode every frame in every format once, keeping the bytes to decode.
        let mut encoded: BTreeMap<Format, Vec<Vec<u8>>> = BTreeMap::new();
        for fmt in Format::ALL {
            let v: Vec<Vec<u8>> = if fmt == Format::JsonToday {
                lines.clone() // the frames as produced today, byte for byte
            } else {
                frames
                    .iter()
                    .map(|f| {
                        let mut out = Vec::new();
                        enc.encode(fmt, f, &mut out);
                        out
                    })
                    .collect()
            };
            encoded.insert(fmt, v);
        }
        let key_ts: Vec<i64> = frames.iter().map(|f| f.ts).collect();

        // Correctness, before any timing: every decoder, every frame, against the
        // generator's truth and serde_json's reading of the original bytes.
        for (i, l) in lines.iter().enumerate() {
            let h: Head = serde_json::from_slice(l).unwrap();
            assert_eq!(
                (h.uid.as_ref(), h.ts),
                (truth[i].0.as_str(), truth[i].1),
                "frame {i}"
            );
        }
        for fmt in Format::ALL {
            for &d in Decoder::for_format(fmt) {
                if matches!(d, Decoder::MemchrFloor) {
                    continue;
                }
                for (i, b) in encoded[&fmt].iter().enumerate() {
                    let mut got = None;
                    decode(d, b, key_ts[i], &dec, &mut |u, t| {
                        got = Some((u.to_owned(), t))
                    });
                    assert_eq!(
                        got.as_ref(),
                        Some(&truth[i]),
                        "{} / {}, frame {i}",
                        fmt.name(),
                        d.name()
                    );
                }
            }
        }
        eprintln!(
            "{size} B: {n} frames, {json_bytes:.0} B each on average; (uid, ts) of every decoder equal the generator's and serde_json's"
        );

        let first = rows.len();
        for fmt in Format::ALL {
            let e = &encoded[&fmt];
            let header = if fmt == Format::KeyTimestamp {
                8.0
            } else {
                0.0
            };
            let raw = e.iter().map(Vec::len).sum::<usize>() as f64 / n as f64 + header;
            let (lz4, zstd) = if fmt == Format::KeyTimestamp {
                // Keys and timestamps are compressed with the batch as well.
                let recs: Vec<Vec<u8>> = e
                    .iter()
                    .zip(&key_ts)
                    .map(|(k, t)| [k.as_slice(), &t.to_le_bytes()].concat())
                    .collect();
                compressed_per_frame(&recs, 1 << 20)
            } else {
                compressed_per_frame(e, 1 << 20)
            };
            for &d in Decoder::for_format(fmt) {
                rows.push(Row {
                    size,
                    frames: n,
                    format: fmt,
                    decoder: Some(d),
                    raw,
                    lz4,
                    zstd,
                    json_bytes,
                    encode: Vec::new(),
                    decode: Vec::new(),
                });
            }
        }

        // Interleaved rounds: each round encodes in every format and decodes with
        // every decoder once, in turn.
        let mut out = Vec::with_capacity(8192);
        for round in 0..a.rounds {
            for r in rows[first..].iter_mut() {
                let fmt = r.format;
                // Encoding is timed once per format (on its first decoder's row).
                if Decoder::for_format(fmt)[0] as u8 == r.decoder.unwrap() as u8 {
                    let s = time_passes(|| {
                        for f in &frames {
                            enc.encode(fmt, f, &mut out);
                            black_box(&out);
                        }
                    });
                    r.encode.push(s);
                }
                let d = r.decoder.unwrap();
                let e = &encoded[&fmt];
                let s = time_passes(|| {
                    let mut acc = 0i64;
                    for (b, &t) in e.iter().zip(&key_ts) {
                        decode(d, black_box(b), t, &dec, &mut |u, ts| {
                            acc = acc.wrapping_add(ts).wrapping_add(u.len() as i64)
                        });
                    }
                    black_box(acc);
                });
                r.decode.push(s);
            }
            eprintln!("{size} B: round {} of {} done", round + 1, a.rounds);
        }
    }

    // The table: medians over the rounds.
    let mut tsv = String::from(
        "size\tformat\tdecoder\tbytes_raw\tbytes_lz4\tbytes_zstd\tjson_bytes\tencode_frames_per_s\textract_frames_per_s\textract_gb_per_s\n",
    );
    for r in &mut rows {
        let n = r.frames as f64;
        let enc_fps = if r.encode.is_empty() {
            String::new()
        } else {
            format!("{:.0}", n / median(&mut r.encode))
        };
        let s = median(&mut r.decode);
        let in_bytes = if r.format == Format::KeyTimestamp {
            r.raw - 8.0
        } else {
            r.raw
        };
        tsv.push_str(&format!(
            "{}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{:.0}\t{:.3}\n",
            r.size,
            r.format.name(),
            r.decoder.map_or("", Decoder::name),
            r.raw,
            r.lz4,
            r.zstd,
            r.json_bytes,
            enc_fps,
            n / s,
            n * in_bytes / s / 1e9,
        ));
    }
    print!("{tsv}");
    if let Some(path) = a.tsv {
        std::fs::write(&path, &tsv).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
}
