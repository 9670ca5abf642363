//! Frame fields taken from the Kafka record itself instead of its JSON value:
//! the user from the record's key (`run --uid-from key`) and the event time from
//! the record's timestamp (`run --ts-from record-timestamp`).
//!
//! A key is a uid when it is non-empty valid UTF-8 (as a JSON uid is a non-empty
//! string). A record timestamp is milliseconds since the epoch, whether the
//! producer set it (CreateTime) or the broker did (LogAppendTime); `--ts-unit`
//! does not apply to it. It is floored to whole seconds and must lie in the range
//! a JSON `ts` may (0 to the end of the year 9999), then meets the calendar's range
//! check like any other ts.

use crate::ts_unit::TsUnit;

/// Why a record's key or timestamp cannot stand for the frame's uid or ts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// `--uid-from key`, and the record has no key (a null key).
    NoKey,
    /// `--uid-from key`, and the key is empty.
    EmptyKey,
    /// `--uid-from key`, and the key is not valid UTF-8: its first bad byte.
    KeyNotUtf8 { at: usize },
    /// `--ts-from record-timestamp`, and the record has none (-1, or not available).
    NoTimestamp,
    /// `--ts-from record-timestamp`, before 1970 or after 9999 (milliseconds).
    TimestampOutOfRange(i64),
}

impl RecordError {
    /// The error in words: the detail of a reject.
    pub fn describe(&self) -> String {
        match self {
            RecordError::NoKey => "the record has no key (--uid-from key)".into(),
            RecordError::EmptyKey => "the record's key is empty (--uid-from key)".into(),
            RecordError::KeyNotUtf8 { at } => {
                format!("the record's key is not valid UTF-8 at byte {at} (--uid-from key)")
            }
            RecordError::NoTimestamp => {
                "the record has no timestamp (--ts-from record-timestamp)".into()
            }
            RecordError::TimestampOutOfRange(ms) => format!(
                "the record's timestamp {ms} ms is not between 0 and {} ms (--ts-from record-timestamp)",
                TsUnit::Millis.max_value()
            ),
        }
    }
}

/// The uid bytes of a record's key.
#[inline]
pub fn uid_from_key(key: Option<&[u8]>) -> Result<&[u8], RecordError> {
    let key = key.ok_or(RecordError::NoKey)?;
    if key.is_empty() {
        return Err(RecordError::EmptyKey);
    }
    simdutf8::compat::from_utf8(key).map_err(|e| RecordError::KeyNotUtf8 {
        at: e.valid_up_to(),
    })?;
    Ok(key)
}

/// The ts (unix seconds, floored) of a record's timestamp in milliseconds.
#[inline]
pub fn ts_from_record(millis: Option<i64>) -> Result<i64, RecordError> {
    let ms = millis.ok_or(RecordError::NoTimestamp)?;
    if !(0..=TsUnit::Millis.max_value()).contains(&ms) {
        return Err(RecordError::TimestampOutOfRange(ms));
    }
    Ok(ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts_unit::MAX_TS;

    #[test]
    fn a_key_is_a_uid_when_it_is_non_empty_utf8() {
        assert_eq!(uid_from_key(Some(b"user-1")), Ok(&b"user-1"[..]));
        assert_eq!(uid_from_key(Some("é".as_bytes())), Ok("é".as_bytes()));
        assert_eq!(uid_from_key(None), Err(RecordError::NoKey));
        assert_eq!(uid_from_key(Some(b"")), Err(RecordError::EmptyKey));
        assert_eq!(
            uid_from_key(Some(b"ab\xff")),
            Err(RecordError::KeyNotUtf8 { at: 2 })
        );
    }

    #[test]
    fn a_record_timestamp_is_milliseconds_floored_to_seconds_in_the_json_range() {
        assert_eq!(ts_from_record(Some(1_700_000_000_999)), Ok(1_700_000_000));
        assert_eq!(ts_from_record(Some(0)), Ok(0));
        assert_eq!(ts_from_record(Some(999)), Ok(0));
        assert_eq!(ts_from_record(Some(253_402_300_799_999)), Ok(MAX_TS));
        for bad in [
            Some(-1),
            Some(-1000),
            Some(253_402_300_800_000),
            Some(i64::MAX),
        ] {
            assert!(ts_from_record(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ts_from_record(None), Err(RecordError::NoTimestamp));
    }
}
