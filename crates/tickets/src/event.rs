//! Events people buy tickets for: a concert, a match, a play, at a venue and a time. (Not the
//! bus's events, which are `common::events`.) Pure rules, no I/O: what an event is, what a client
//! may send to create one, and when two events are one.

use common::FieldError;
use common::money::{self, Cents};
use common::validate::{FieldErrors, Validate};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;
use uuid::Uuid;

use crate::domain::required_text;

/// The longest name or venue an event may have, in characters.
const MAX_NAME_CHARS: usize = 200;
/// The longest city name, in characters.
const MAX_CITY_CHARS: usize = 100;
/// How far ahead an event may be created: further than this is a typo, not an event on sale.
const MAX_YEARS_AHEAD: i64 = 10;

/// An event as the service keeps it and as the HTTP API shows it, with what is on sale for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "0193f1c2-6b1d-7e2a-8c3b-1a2b3c4d5e6f", "name": "Radiohead",
    "venue": "Madison Square Garden", "city": "New York",
    "startsAt": "2027-06-13T00:00:00Z", "timeZone": "America/New_York",
    "localStartsAt": "2027-06-12T20:00:00-04:00",
    "userId": "0193f1c0-11aa-7b2c-8d3e-4f5a6b7c8d9e", "createdAt": "2026-06-01T18:30:00.123Z",
    "ticketsForSale": 3, "lowestPrice": 79.5
}))]
pub struct Event {
    pub id: Uuid,
    pub name: String,
    pub venue: String,
    pub city: String,
    /// When the event starts, in UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: OffsetDateTime,
    /// The time zone of the venue, as an IANA name (`Europe/London`).
    pub time_zone: String,
    /// The start as clocks at the venue show it, with that day's offset from UTC.
    pub local_starts_at: String,
    /// Who created the event.
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// How many of the event's tickets no order holds; 0 once it has started.
    pub tickets_for_sale: i64,
    /// The price of the cheapest of them, in the currency's major unit; null when none is.
    #[serde(serialize_with = "money::major_or_null")]
    #[schema(value_type = Option<f64>, required)]
    pub lowest_price: Option<Cents>,
}

impl Event {
    /// An event just created by `user`, with nothing on sale yet.
    pub fn created(details: NewEvent, user: Uuid, created_at: OffsetDateTime) -> Self {
        let starts_at_millis = details.starts_at.as_millisecond();
        Self {
            id: Uuid::now_v7(),
            name: details.name,
            venue: details.venue,
            city: details.city,
            starts_at: common::clock::from_millis(starts_at_millis),
            local_starts_at: on_venue_clocks(starts_at_millis, &details.time_zone),
            time_zone: details.time_zone,
            user_id: user,
            created_at,
            tickets_for_sale: 0,
            lowest_price: None,
        }
    }

    /// What makes two events one: see [`duplicate_key`].
    pub fn duplicate_key(&self) -> String {
        duplicate_key(
            &self.name,
            &self.venue,
            common::clock::millis(self.starts_at),
        )
    }
}

/// A start as clocks in `time_zone` show it, with that day's offset: what `localStartsAt` says.
/// A zone the zone database no longer knows shows the start in UTC rather than failing.
pub(crate) fn on_venue_clocks(starts_at_millis: i64, time_zone: &str) -> String {
    let starts_at = Timestamp::from_millisecond(starts_at_millis).unwrap_or(Timestamp::UNIX_EPOCH);
    let zone = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    starts_at
        .to_zoned_datetime(zone)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Two events with this key are one: the same name and venue, written alike up to case, accents,
/// punctuation and spacing, starting in the same minute. The store keeps it unique, so an event
/// created twice, even at the same moment, is stored once. A hash, so that the key stays short
/// however long the texts grow when decomposed.
pub(crate) fn duplicate_key(name: &str, venue: &str, starts_at_millis: i64) -> String {
    let minute = starts_at_millis.div_euclid(60_000);
    let key = format!("{}\u{1f}{}\u{1f}{minute}", loose(name), loose(venue));
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Text reduced to its words: lower case, without accents, punctuation or extra spaces. Text
/// with no letters or digits at all (emoji, say) is kept as typed, but for case and spacing.
pub(crate) fn loose(text: &str) -> String {
    let folded: String = text
        .nfkd()
        // Accents, which sit on a letter, go; marks that are letters of their own script, such
        // as Indic vowel signs (class 0) and viramas (class 9), stay.
        .filter(|c| matches!(canonical_combining_class(*c), 0 | 9))
        .flat_map(char::to_lowercase)
        .collect();
    let words: String = folded
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.is_empty() {
        folded.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        words
    }
}

/// A valid event: what creating one needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub name: String,
    pub venue: String,
    pub city: String,
    pub starts_at: Timestamp,
    /// The zone's IANA name as the zone database spells it.
    pub time_zone: String,
}

/// The body of `POST /api/events` as received, each field kept as raw JSON so that a wrong type
/// is a field error like any other.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "name": "Radiohead", "venue": "Madison Square Garden", "city": "New York",
    "startsAt": "2027-06-12T20:00", "timeZone": "America/New_York"
}))]
pub(crate) struct EventBody {
    /// 1 to 200 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub name: Option<serde_json::Value>,
    /// 1 to 200 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub venue: Option<serde_json::Value>,
    /// 1 to 100 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub city: Option<serde_json::Value>,
    /// The start: RFC 3339 with an offset (`2027-06-13T00:00:00Z`), or the time on the venue's
    /// clocks without one (`2027-06-12T20:00`). In the future, at most 10 years ahead.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub starts_at: Option<serde_json::Value>,
    /// The venue's time zone, an IANA name such as `Europe/London`.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub time_zone: Option<serde_json::Value>,
}

impl EventBody {
    /// Validates the body as of `now`: the start must lie ahead of it.
    pub(crate) fn validate_at(self, now: Timestamp) -> Result<NewEvent, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required_text("Name", self.name.as_ref(), MAX_NAME_CHARS),
        );
        let venue = errors.check(
            "venue",
            required_text("Venue", self.venue.as_ref(), MAX_NAME_CHARS),
        );
        let city = errors.check(
            "city",
            required_text("City", self.city.as_ref(), MAX_CITY_CHARS),
        );
        let zone = errors.check("timeZone", time_zone(self.time_zone.as_ref()));
        // The start can be read only in a known zone; with an unknown one, only its zone's
        // error is reported.
        let starts_at = zone.as_ref().and_then(|(zone, _)| {
            errors.check("startsAt", start(self.starts_at.as_ref(), zone, now))
        });
        let valid = match (name, venue, city, zone, starts_at) {
            (Some(name), Some(venue), Some(city), Some((_, time_zone)), Some(starts_at)) => {
                Some(NewEvent {
                    name,
                    venue,
                    city,
                    starts_at,
                    time_zone,
                })
            }
            _ => None,
        };
        errors.into_result(valid)
    }
}

impl Validate for EventBody {
    type Valid = NewEvent;

    fn validate(self) -> Result<NewEvent, Vec<FieldError>> {
        self.validate_at(Timestamp::now())
    }
}

/// A time zone by its IANA name, and that name as the zone database spells it.
fn time_zone(value: Option<&serde_json::Value>) -> Result<(TimeZone, String), String> {
    let name = match value {
        None | Some(serde_json::Value::Null) => return Err("Time zone is required".into()),
        Some(serde_json::Value::String(name)) => name.trim(),
        Some(_) => return Err("Time zone must be text".into()),
    };
    if name.is_empty() {
        return Err("Time zone is required".into());
    }
    let unknown = || "Time zone must be an IANA time zone name, such as Europe/London".to_string();
    let zone = TimeZone::get(name).map_err(|_| unknown())?;
    let canonical = zone.iana_name().ok_or_else(unknown)?.to_owned();
    Ok((zone, canonical))
}

/// The start of an event: an instant with an offset, or the time on the venue's clocks. A local
/// time that occurs twice (clocks going back) is the first; one that is skipped (clocks going
/// forward) moves on by the gap, as calendars do.
fn start(
    value: Option<&serde_json::Value>,
    zone: &TimeZone,
    now: Timestamp,
) -> Result<Timestamp, String> {
    let text = match value {
        None | Some(serde_json::Value::Null) => return Err("Start time is required".into()),
        Some(serde_json::Value::String(text)) => text.trim(),
        Some(_) => return Err("Start time must be text".into()),
    };
    if text.is_empty() {
        return Err("Start time is required".into());
    }
    // A date and a time, nothing more: a date alone is not a start, and a bracketed zone would
    // be another zone than `timeZone`.
    let has_time = text
        .get(10..)
        .is_some_and(|rest| rest.starts_with(['T', 't', ' ']));
    let unreadable = || {
        "Start time must be a date and time such as 2027-06-12T20:00 or 2027-06-13T00:00:00Z"
            .to_string()
    };
    if !has_time || text.contains('[') {
        return Err(unreadable());
    }
    let starts_at = match text.parse::<Timestamp>() {
        Ok(instant) => instant,
        Err(_) => text
            .parse::<DateTime>()
            .and_then(|local| local.to_zoned_datetime(zone.clone()))
            .map(|zoned| zoned.timestamp())
            .map_err(|_| unreadable())?,
    };
    let latest = now
        .as_millisecond()
        .saturating_add(MAX_YEARS_AHEAD * 366 * 24 * 3_600_000);
    if starts_at <= now {
        Err("Start time must be in the future".into())
    } else if starts_at.as_millisecond() > latest {
        Err(format!(
            "Start time must be at most {MAX_YEARS_AHEAD} years ahead"
        ))
    } else {
        Ok(starts_at)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// 2026-12-06T12:00:00Z.
    fn now() -> Timestamp {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn body(value: serde_json::Value) -> Result<NewEvent, Vec<FieldError>> {
        serde_json::from_value::<EventBody>(value)
            .unwrap()
            .validate_at(now())
    }

    fn radiohead(starts_at: &str, zone: &str) -> serde_json::Value {
        json!({"name": "Radiohead", "venue": "Madison Square Garden", "city": "New York",
               "startsAt": starts_at, "timeZone": zone})
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().filter_map(|e| e.field.as_deref()).collect()
    }

    fn messages(errors: &[FieldError]) -> Vec<(String, String)> {
        errors
            .iter()
            .map(|e| (e.field.clone().unwrap_or_default(), e.message.clone()))
            .collect()
    }

    #[test]
    fn a_local_start_is_read_on_the_venues_clocks() {
        let event = body(radiohead("2027-06-12T20:00", "America/New_York")).unwrap();
        // New York is on summer time in June: UTC-4.
        assert_eq!(event.starts_at.to_string(), "2027-06-13T00:00:00Z");
        assert_eq!(event.time_zone, "America/New_York");
        let winter = body(radiohead("2027-01-12T20:00", "America/New_York")).unwrap();
        assert_eq!(winter.starts_at.to_string(), "2027-01-13T01:00:00Z");
    }

    #[test]
    fn a_start_with_an_offset_is_that_instant_whatever_the_zone() {
        let utc = body(radiohead("2027-06-13T00:00:00Z", "Asia/Tokyo")).unwrap();
        let offset = body(radiohead("2027-06-12T20:00:00-04:00", "Asia/Tokyo")).unwrap();
        assert_eq!(utc.starts_at, offset.starts_at);
        assert_eq!(utc.starts_at.to_string(), "2027-06-13T00:00:00Z");
    }

    #[test]
    fn clocks_going_back_or_forward_give_one_start() {
        // 01:30 happens twice in New York on 7 November 2027: the first, still on summer time.
        let twice = body(radiohead("2027-11-07T01:30", "America/New_York")).unwrap();
        assert_eq!(twice.starts_at.to_string(), "2027-11-07T05:30:00Z");
        // 02:30 does not happen on 14 March 2027: it is 03:30 summer time.
        let skipped = body(radiohead("2027-03-14T02:30", "America/New_York")).unwrap();
        assert_eq!(skipped.starts_at.to_string(), "2027-03-14T07:30:00Z");
    }

    #[test]
    fn the_shown_local_start_carries_that_days_offset() {
        let details = body(radiohead("2027-06-12T20:00", "Europe/London")).unwrap();
        let event = Event::created(details, Uuid::nil(), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(event.local_starts_at, "2027-06-12T20:00:00+01:00");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["startsAt"], "2027-06-12T19:00:00Z");
        assert_eq!(json["timeZone"], "Europe/London");
        assert_eq!(json["lowestPrice"], json!(null));
        assert_eq!(json["ticketsForSale"], 0);
        assert_eq!(json.as_object().unwrap().len(), 11);
    }

    #[test]
    fn a_zone_is_known_by_its_iana_name_in_any_case() {
        let event = body(radiohead("2027-06-12T20:00", "europe/london")).unwrap();
        assert_eq!(event.time_zone, "Europe/London");
        for unknown in [
            json!("Mars/Olympus_Mons"),
            json!("EST5EDT,M3.2.0"),
            json!(3),
        ] {
            let mut value = radiohead("2027-06-12T20:00", "UTC");
            value["timeZone"] = unknown.clone();
            let errors = body(value).unwrap_err();
            assert_eq!(fields(&errors), ["timeZone"], "{unknown}");
        }
    }

    #[test]
    fn a_start_must_be_readable_ahead_and_not_too_far() {
        for (start, message) in [
            ("2026-12-06T11:59:59Z", "Start time must be in the future"),
            ("2026-12-06T12:00:00Z", "Start time must be in the future"),
            (
                "2040-01-01T00:00",
                "Start time must be at most 10 years ahead",
            ),
            (
                "next friday",
                "Start time must be a date and time such as 2027-06-12T20:00 or \
                 2027-06-13T00:00:00Z",
            ),
            (
                "2027-02-30T20:00",
                "Start time must be a date and time such as 2027-06-12T20:00 or \
                 2027-06-13T00:00:00Z",
            ),
            ("", "Start time is required"),
            (
                "2027-06-12",
                "Start time must be a date and time such as 2027-06-12T20:00 or \
                 2027-06-13T00:00:00Z",
            ),
            (
                "2027-06-12T20:00[Asia/Tokyo]",
                "Start time must be a date and time such as 2027-06-12T20:00 or \
                 2027-06-13T00:00:00Z",
            ),
        ] {
            let errors = body(radiohead(start, "UTC")).unwrap_err();
            assert_eq!(
                messages(&errors),
                [("startsAt".to_string(), message.to_string())],
                "{start}"
            );
        }
        assert!(body(radiohead("2026-12-06T12:00:01Z", "UTC")).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let errors = body(json!({})).unwrap_err();
        assert_eq!(fields(&errors), ["name", "venue", "city", "timeZone"]);
        let errors = body(json!({"name": " ", "venue": "V\u{202E}", "city": 7,
            "startsAt": 20270612, "timeZone": "UTC"}))
        .unwrap_err();
        assert_eq!(fields(&errors), ["name", "venue", "city", "startsAt"]);
    }

    #[test]
    fn events_written_alike_in_the_same_minute_are_one() {
        let at = 1_812_844_800_000; // 2027-06-13T00:00:00Z
        let key = duplicate_key("Radiohead", "Madison Square Garden", at);
        assert_eq!(
            duplicate_key("  RADIOHEAD ", "madison square-garden", at + 59_999),
            key
        );
        assert_eq!(
            duplicate_key("Beyonce\u{301}", "Stade de France", at),
            duplicate_key("Beyonce", "Stade  de  France!", at)
        );
        assert_ne!(
            duplicate_key("Radiohead", "Madison Square Garden", at + 60_000),
            key
        );
        assert_ne!(duplicate_key("Radiohead", "Barclays Center", at), key);
        assert_ne!(
            duplicate_key("Radiohead II", "Madison Square Garden", at),
            key
        );
        assert_eq!(key.len(), 64);
        // However long a text grows when decomposed, the key does not.
        assert_eq!(duplicate_key(&"\u{FDFA}".repeat(200), "V", at).len(), 64);
    }

    #[test]
    fn names_without_letters_or_that_differ_in_a_vowel_sign_are_different_events() {
        let at = 1_812_844_800_000;
        assert_ne!(
            duplicate_key("!!!", "Club", at),
            duplicate_key("???", "Club", at)
        );
        assert_ne!(
            duplicate_key("🎸🎸", "Club", at),
            duplicate_key("🎻", "Club", at)
        );
        // Devanagari: कमल and कुमल differ in a vowel sign only.
        assert_ne!(
            duplicate_key("\u{915}\u{92E}\u{932}", "Club", at),
            duplicate_key("\u{915}\u{941}\u{92E}\u{932}", "Club", at)
        );
    }
}
