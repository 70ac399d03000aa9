//! Times as the stores and the domains keep them: unix milliseconds, and back. Here rather than
//! in the store module, so that domain code reads times without reaching into the store.

/// Now, as the unix milliseconds that the store keeps times in.
pub fn now_millis() -> i64 {
    millis(time::OffsetDateTime::now_utc())
}

/// Now, to the millisecond: the time a store will read back.
pub fn now() -> time::OffsetDateTime {
    from_millis(now_millis())
}

pub fn millis(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A span in the milliseconds that times are kept in (the longest fits).
pub fn span_millis(span: std::time::Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}

pub fn from_millis(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_millis() {
        let at = time::macros::datetime!(2026-11-25 12:34:56.789 UTC);
        assert_eq!(from_millis(millis(at)), at);
    }
}
