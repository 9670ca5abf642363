//! Why a frame was not counted: the one list of reasons, each named once.
//!
//! The names are part of the rejects format and of the summary; the parser's
//! errors, the calendar's range, the source's frame limit and the aggregator's
//! verdicts all map onto this list, so telemetry and sinks never spell a reason.

use crate::parser::ParseError;
use crate::record::RecordError;

/// A reason a frame was rejected, in the order the summary prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Empty,
    /// A Kafka record with a null value: a delete marker, not an empty frame.
    Tombstone,
    NotAnObject,
    Truncated,
    Malformed,
    DuplicateKey,
    MissingUid,
    MissingTs,
    UidNotString,
    EmptyUid,
    BadTs,
    TooLarge,
    /// A stage failed on this frame (a bug): it is set aside so the run goes on.
    InternalError,
    Late,
    Outlier,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Empty,
        Reason::Tombstone,
        Reason::NotAnObject,
        Reason::Truncated,
        Reason::Malformed,
        Reason::DuplicateKey,
        Reason::MissingUid,
        Reason::MissingTs,
        Reason::UidNotString,
        Reason::EmptyUid,
        Reason::BadTs,
        Reason::TooLarge,
        Reason::InternalError,
        Reason::Late,
        Reason::Outlier,
    ];

    /// The stable machine-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::Tombstone => "tombstone",
            Reason::NotAnObject => "not_an_object",
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed",
            Reason::DuplicateKey => "duplicate_key",
            Reason::MissingUid => "missing_uid",
            Reason::MissingTs => "missing_ts",
            Reason::UidNotString => "uid_not_string",
            Reason::EmptyUid => "empty_uid",
            Reason::BadTs => "bad_ts",
            Reason::TooLarge => "too_large",
            Reason::InternalError => "internal_error",
            Reason::Late => "late",
            Reason::Outlier => "outlier",
        }
    }

    /// Late and outlying frames are judged by the aggregator, not rejected on sight.
    pub fn is_parse_stage(self) -> bool {
        !matches!(self, Reason::Late | Reason::Outlier)
    }
}

impl From<&ParseError> for Reason {
    fn from(e: &ParseError) -> Reason {
        match e {
            ParseError::Empty => Reason::Empty,
            ParseError::NotAnObject(_) => Reason::NotAnObject,
            ParseError::Truncated => Reason::Truncated,
            ParseError::Malformed(_) => Reason::Malformed,
            ParseError::MissingUid => Reason::MissingUid,
            ParseError::MissingTs => Reason::MissingTs,
            ParseError::UidNotString => Reason::UidNotString,
            ParseError::EmptyUid => Reason::EmptyUid,
            ParseError::BadTs => Reason::BadTs,
            ParseError::DuplicateKey(_) => Reason::DuplicateKey,
        }
    }
}

/// A record's key or timestamp standing for the uid or the ts (`run --uid-from
/// key`, `--ts-from record-timestamp`) fails for the reason the JSON field would.
impl From<&RecordError> for Reason {
    fn from(e: &RecordError) -> Reason {
        match e {
            RecordError::NoKey => Reason::MissingUid,
            RecordError::EmptyKey => Reason::EmptyUid,
            RecordError::KeyNotUtf8 { .. } => Reason::UidNotString,
            RecordError::NoTimestamp | RecordError::TimestampOutOfRange(_) => Reason::BadTs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_is_complete() {
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
    }

    /// (Here rather than in `record`'s tests, so that `record` never uses `reject`.)
    #[test]
    fn a_record_error_is_the_reason_the_json_field_would_be() {
        let reasons = [
            RecordError::NoKey,
            RecordError::EmptyKey,
            RecordError::KeyNotUtf8 { at: 0 },
        ]
        .map(|e| Reason::from(&e));
        assert_eq!(
            reasons,
            [Reason::MissingUid, Reason::EmptyUid, Reason::UidNotString]
        );
        assert_eq!(Reason::from(&RecordError::NoTimestamp), Reason::BadTs);
        assert_eq!(
            Reason::from(&RecordError::TimestampOutOfRange(-5)),
            Reason::BadTs
        );
    }
}
