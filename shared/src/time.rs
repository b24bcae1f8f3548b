//! Event timestamps: UTC, RFC 3339, exactly six fractional digits and `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// The envelope's `ts` for an instant.
pub fn format_ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The envelope's `ts` for now.
pub fn now_ts() -> String {
    format_ts(Utc::now())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// Parses an envelope `ts` back into an instant; `None` if it is not RFC 3339.
pub fn parse_ts(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How long ago an envelope `ts` was (zero for one in the future); `None` if unreadable.
pub fn age(ts: &str) -> Option<std::time::Duration> {
    let at = parse_ts(ts)?;
    Some((Utc::now() - at).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fractional_digits_and_z() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T07:19:16.1Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid literal");
        assert_eq!(format_ts(at), "2026-11-27T07:19:16.100000Z");
        let now = now_ts();
        assert_eq!(now.len(), "2026-11-27T07:19:16.123456Z".len());
        assert!(now.ends_with('Z'));
        assert_eq!(parse_ts(&now).map(format_ts), Some(now.clone()));
        assert!(age(&now).is_some_and(|a| a.as_secs() < 5));
        assert_eq!(
            age("2999-01-01T00:00:00.000000Z"),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(age("yesterday"), None);
    }
}
