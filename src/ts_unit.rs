//! The range and the unit of a `ts`: what the parser accepts in a frame's root
//! `ts` (`--ts-unit`), and what a Kafka record's timestamp must lie in when it
//! stands for one ([`crate::record`]).

/// Largest accepted `ts`: 9999-12-31T23:59:59Z, the end of RFC 3339 time.
/// Anything later cannot be a click; anything earlier is the watermark's business.
pub const MAX_TS: i64 = 253_402_300_799;

/// The unit of the root `ts`, `--ts-unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum TsUnit {
    /// Unix seconds.
    #[default]
    #[value(name = "s")]
    Seconds,
    /// Unix milliseconds (13 digits today).
    #[value(name = "ms")]
    Millis,
    /// Unix microseconds (16 digits today).
    #[value(name = "us")]
    Micros,
}

impl TsUnit {
    /// How many of the unit make a second.
    pub const fn per_second(self) -> i64 {
        match self {
            TsUnit::Seconds => 1,
            TsUnit::Millis => 1_000,
            TsUnit::Micros => 1_000_000,
        }
    }

    /// The `--ts-unit` value.
    pub const fn name(self) -> &'static str {
        match self {
            TsUnit::Seconds => "s",
            TsUnit::Millis => "ms",
            TsUnit::Micros => "us",
        }
    }

    /// The unit in words, for messages.
    pub const fn words(self) -> &'static str {
        match self {
            TsUnit::Seconds => "seconds",
            TsUnit::Millis => "milliseconds",
            TsUnit::Micros => "microseconds",
        }
    }

    /// The largest accepted value in this unit: the last one of [`MAX_TS`]'s second.
    pub const fn max_value(self) -> i64 {
        (MAX_TS + 1) * self.per_second() - 1
    }

    /// Digits a `ts` string may have (leading zeros included): 12 for seconds,
    /// three more per factor of 1000. Also bounds the value below `i64::MAX`.
    pub(crate) const fn max_digits(self) -> usize {
        match self {
            TsUnit::Seconds => 12,
            TsUnit::Millis => 15,
            TsUnit::Micros => 18,
        }
    }
}
