//! How values read on a page: money with its currency sign and thousands separators, dates as
//! people write them, and the seconds left to pay as a clock.

use common::money::Cents;
use time::OffsetDateTime;
use time::macros::format_description;

/// An amount as a person reads it: `$1,234.50`, `€20.00`, or `20.00 CHF` for a currency without
/// a sign we know. Integer arithmetic only: cents never pass through floating point.
pub(crate) fn money(cents: Cents, currency: &str) -> String {
    amount(cents.get(), currency)
}

/// [`money`] for an amount that may be zero, such as a fee.
pub(crate) fn amount(cents: i64, currency: &str) -> String {
    let whole = group_thousands(cents / 100);
    let amount = format!("{whole}.{:02}", cents % 100);
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("${amount}"),
        "eur" => format!("€{amount}"),
        "gbp" => format!("£{amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

/// An amount as the API sends it (major units, a JSON number, zero allowed), in exact cents.
pub(crate) fn amount_cents(value: Option<&serde_json::Value>) -> Option<i64> {
    match value {
        Some(serde_json::Value::Number(number)) if number.as_i64() == Some(0) => Some(0),
        _ => cents(value).map(Cents::get),
    }
}

/// A price as the API sends it (major units, a JSON number), read back into exact cents.
pub(crate) fn cents(value: Option<&serde_json::Value>) -> Option<Cents> {
    Cents::from_json(value).ok()
}

/// The price as a person typed it into a form, for the `value` of the field when editing.
pub(crate) fn price_input(cents: Cents) -> String {
    common::money::plain(cents.get())
}

fn group_thousands(mut n: i64) -> String {
    let mut groups = Vec::new();
    while n >= 1000 {
        groups.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    groups.push(n.to_string());
    groups.reverse();
    groups.join(",")
}

/// A date as `25 Nov 2026`, from the API's RFC 3339 text; the raw text if it does not parse.
pub(crate) fn date(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|at| {
            at.format(format_description!(
                "[day padding:none] [month repr:short] [year]"
            ))
            .ok()
        })
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// Whole seconds from `now` until `expires_at`, never below zero. Computed on the server's clock
/// so a browser whose clock is wrong still counts down from the right number.
pub(crate) fn seconds_left(expires_at: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (expires_at - now).whole_seconds().max(0)
}

/// Seconds as a clock: `14:05`, or `1:02:03` past an hour.
pub(crate) fn clock(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn c(cents: i64) -> Cents {
        Cents::new(cents).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn money_reads_with_its_sign_and_exact_cents() {
        assert_eq!(money(c(1999), "usd"), "$19.99");
        assert_eq!(money(c(2000), "usd"), "$20.00");
        assert_eq!(money(c(1), "USD"), "$0.01");
        assert_eq!(money(c(12_345_678), "usd"), "$123,456.78");
        assert_eq!(money(c(100_000_000), "eur"), "€1,000,000.00");
        assert_eq!(money(c(1550), "chf"), "15.50 CHF");
    }

    #[test]
    fn prices_from_the_api_become_exact_cents() {
        assert_eq!(cents(Some(&json!(19.99))).map(Cents::get), Some(1999));
        assert_eq!(cents(Some(&json!(15.5))).map(Cents::get), Some(1550));
        assert_eq!(cents(Some(&json!("x"))), None);
        assert_eq!(price_input(c(1550)), "15.50");
        assert_eq!(price_input(c(2000)), "20");
    }

    #[test]
    fn dates_read_as_people_write_them() {
        assert_eq!(date("2026-11-25T23:30:00.123Z"), "25 Nov 2026");
        assert_eq!(date("2026-01-05T00:00:00Z"), "5 Jan 2026");
        assert_eq!(date("not a date"), "not a date");
    }

    #[test]
    fn the_countdown_starts_from_the_servers_clock_and_stops_at_zero() {
        let now = datetime!(2026-11-25 23:30:00 UTC);
        assert_eq!(seconds_left(datetime!(2026-11-25 23:45:00 UTC), now), 900);
        assert_eq!(seconds_left(datetime!(2026-11-25 23:30:00.900 UTC), now), 0);
        assert_eq!(seconds_left(datetime!(2026-11-25 23:29:00 UTC), now), 0);
        assert_eq!(clock(900), "15:00");
        assert_eq!(clock(65), "1:05");
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(3723), "1:02:03");
    }
}
