//! The tickets domain: what a ticket is and what a client may send to list or edit one. Pure
//! rules, no I/O; raw input becomes a domain value here or is refused with one error per failing
//! field.

use common::FieldError;
use common::events::{TicketCreated, TicketUpdated};
use common::money::{self, Cents};
use common::validate::{FieldErrors, Validate, id_field, is_control_or_bidi, is_invisible};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// The longest title a ticket may have, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 200;

/// A ticket as the service keeps it and as the HTTP API shows it:
/// `{id, title, price, userId, version, orderId, createdAt}`, and on a ticket of an event its
/// `eventId` and seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "0193f1c2-7a4e-7c1d-9a53-2f1e4d6b8c01", "title": "Radiohead, floor standing",
    "price": 79.5, "userId": "0193f1c0-11aa-7b2c-8d3e-4f5a6b7c8d9e", "version": 0,
    "orderId": null, "createdAt": "2026-06-01T18:30:00.123Z"
}))]
pub struct Ticket {
    pub id: Uuid,
    pub title: String,
    /// In the currency's major unit, at most two decimals (`19.99`); cents inside.
    #[serde(serialize_with = "money::major")]
    #[schema(value_type = f64, minimum = 0.01, maximum = 1000000)]
    pub price: Cents,
    /// The owner: the seller, until an order for it is paid; then the buyer, or whoever it was
    /// sent to since.
    pub user_id: Uuid,
    /// Bumped on every change announced by ticket:updated; starts at 0.
    pub version: i64,
    /// The order holding the ticket, or that bought it; null while it is for sale.
    #[schema(required)]
    pub order_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The event the ticket is for; absent on a ticket of no event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Where the seat is, as the seller gave it; each absent when not given.
    #[serde(flatten)]
    pub seat: Seat,
    /// Which listing this is: 0 as its seller listed it, one more each time an owner lists it
    /// again. For the replicas, which take orders per listing.
    #[serde(skip)]
    pub listing: i64,
}

impl Ticket {
    /// A ticket just listed by `seller`: version 0, not reserved.
    pub fn listed(listing: NewListing, seller: Uuid, created_at: OffsetDateTime) -> Self {
        let (event_id, seat) = match listing.event {
            Some((event_id, seat)) => (Some(event_id), seat),
            None => (None, Seat::default()),
        };
        Self {
            id: Uuid::now_v7(),
            title: listing.ticket.title.into_inner(),
            price: listing.ticket.price,
            user_id: seller,
            version: 0,
            order_id: None,
            created_at,
            event_id,
            seat,
            listing: 0,
        }
    }

    /// Whether an order holds the ticket.
    pub fn is_reserved(&self) -> bool {
        self.order_id.is_some()
    }

    /// The event announcing a newly listed ticket, with when its event starts, if it is for one.
    pub fn created_event(&self, event_starts_at: Option<OffsetDateTime>) -> TicketCreated {
        TicketCreated {
            id: self.id,
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id,
            event_id: self.event_id,
            event_starts_at,
        }
    }

    /// The event announcing a change (edit, reservation or release) at the ticket's version.
    pub fn updated_event(&self) -> TicketUpdated {
        TicketUpdated {
            id: self.id,
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id,
            order_id: self.order_id,
            listing: self.listing,
        }
    }
}

/// A ticket title: trimmed, in Unicode's composed form (NFC), not empty, at most
/// [`MAX_TITLE_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Parses a title as a client sends it (any JSON value, or nothing).
    pub fn from_json(value: Option<&serde_json::Value>) -> Result<Self, String> {
        required_text("Title", value, MAX_TITLE_CHARS).map(Self)
    }

    /// Parses a title from text: see [`shown_text`].
    pub fn parse(text: &str) -> Result<Self, String> {
        shown_text("Title", text, MAX_TITLE_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Text shown to buyers (a title, an event's name, a seat), parsed from what a client typed:
/// trimmed, and in Unicode's composed form (NFC), so that one text typed two ways (é as one
/// character or as e and an accent) is stored, counted and searched as one. It must show
/// something, and nothing in it may steer a terminal or the text's direction: a listing must read
/// as what it is. `label` names the text in the messages.
pub(crate) fn shown_text(label: &str, text: &str, max_chars: usize) -> Result<String, String> {
    let composed: String = text.nfc().collect();
    let trimmed = composed.trim();
    if trimmed.chars().any(is_control_or_bidi) {
        Err(format!(
            "{label} must not contain control or text-direction characters"
        ))
    } else if trimmed
        .chars()
        .all(|c| c.is_whitespace() || is_invisible(c))
    {
        Err(format!("{label} is required"))
    } else if trimmed.chars().count() > max_chars {
        Err(format!("{label} must be at most {max_chars} characters"))
    } else {
        Ok(trimmed.to_owned())
    }
}

/// [`shown_text`] as a client sends it: any JSON value, or nothing.
pub(crate) fn required_text(
    label: &str,
    value: Option<&serde_json::Value>,
    max_chars: usize,
) -> Result<String, String> {
    match value {
        None | Some(serde_json::Value::Null) => Err(format!("{label} is required")),
        Some(serde_json::Value::String(text)) => shown_text(label, text, max_chars),
        Some(_) => Err(format!("{label} must be text")),
    }
}

/// [`required_text`] for text a client may leave out: nothing, `null` and blank text are all
/// "not given".
pub(crate) fn optional_text(
    label: &str,
    value: Option<&serde_json::Value>,
    max_chars: usize,
) -> Result<Option<String>, String> {
    match value {
        Some(serde_json::Value::String(text))
            if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) =>
        {
            Ok(None)
        }
        None | Some(serde_json::Value::Null) => Ok(None),
        value => required_text(label, value, max_chars).map(Some),
    }
}

/// A seat at an event, as the seller describes it: free text, since venues name their seats in
/// their own ways.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Seat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
}

/// The longest section, row or seat, in characters.
const MAX_SEAT_CHARS: usize = 40;

/// A valid title and price: what listing or editing a ticket needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    pub title: Title,
    pub price: Cents,
}

/// The body of `POST /api/tickets` and `PUT /api/tickets/{id}` as received. Both fields are kept
/// as raw JSON so that a wrong type is a field error like any other, reported with the rest.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"title": "Radiohead, floor standing", "price": 79.5}))]
pub(crate) struct TicketBody {
    /// Shown to buyers: 1 to 200 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(value_type = String, required, min_length = 1)]
    pub title: Option<serde_json::Value>,
    /// In the currency's major unit, at most two decimals: more than 0, at most 1,000,000.
    #[serde(default)]
    #[schema(value_type = f64, required, minimum = 0.01, maximum = 1000000)]
    pub price: Option<serde_json::Value>,
}

/// A valid listing: a title and price, and the event and seat when the ticket is for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListing {
    pub ticket: NewTicket,
    pub event: Option<(Uuid, Seat)>,
}

/// The body of `POST /api/tickets`: a title and price, and optionally the event the ticket is for
/// and its seat.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"title": "Radiohead, floor standing", "price": 79.5}))]
pub(crate) struct ListingBody {
    #[serde(flatten)]
    pub ticket: TicketBody,
    /// The event the ticket is for: one that has not started. Set when listing, never changed.
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub event_id: Option<serde_json::Value>,
    /// Up to 40 characters; only with `eventId`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub section: Option<serde_json::Value>,
    /// Up to 40 characters; only with `eventId`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub row: Option<serde_json::Value>,
    /// Up to 40 characters; only with `eventId`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub seat: Option<serde_json::Value>,
}

impl Validate for ListingBody {
    type Valid = NewListing;

    fn validate(self) -> Result<NewListing, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let ticket = self.ticket.check(&mut errors);
        let event_id = match self.event_id.as_ref() {
            None | Some(serde_json::Value::Null) => Some(None),
            given => errors
                .check("eventId", id_field(given, "Event id"))
                .map(Some),
        };
        let section = errors.check(
            "section",
            optional_text("Section", self.section.as_ref(), MAX_SEAT_CHARS),
        );
        let row = errors.check(
            "row",
            optional_text("Row", self.row.as_ref(), MAX_SEAT_CHARS),
        );
        let seat = errors.check(
            "seat",
            optional_text("Seat", self.seat.as_ref(), MAX_SEAT_CHARS),
        );
        let seat = match (section, row, seat) {
            (Some(section), Some(row), Some(seat)) => Some(Seat { section, row, seat }),
            _ => None,
        };
        let event = match (event_id, seat) {
            (Some(Some(event_id)), Some(seat)) => Some(Some((event_id, seat))),
            (Some(None), Some(seat)) if seat == Seat::default() => Some(None),
            (Some(None), Some(_)) => {
                errors.add("eventId", "Event id is required with a seat");
                None
            }
            _ => None,
        };
        let valid = ticket
            .zip(event)
            .map(|(ticket, event)| NewListing { ticket, event });
        errors.into_result(valid)
    }
}

impl Validate for TicketBody {
    type Valid = NewTicket;

    fn validate(self) -> Result<NewTicket, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let valid = self.check(&mut errors);
        errors.into_result(valid)
    }
}

impl TicketBody {
    /// The title and price, or their errors added to `errors`.
    fn check(self, errors: &mut FieldErrors) -> Option<NewTicket> {
        let title = errors.check("title", Title::from_json(self.title.as_ref()));
        let price = errors.check("price", Cents::from_json(self.price.as_ref()));
        title
            .zip(price)
            .map(|(title, price)| NewTicket { title, price })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Result<NewTicket, Vec<FieldError>> {
        serde_json::from_value::<TicketBody>(value)
            .unwrap()
            .validate()
    }

    fn listing(value: serde_json::Value) -> Result<NewListing, Vec<FieldError>> {
        serde_json::from_value::<ListingBody>(value)
            .unwrap()
            .validate()
    }

    fn plain(ticket: NewTicket) -> NewListing {
        NewListing {
            ticket,
            event: None,
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().filter_map(|e| e.field.as_deref()).collect()
    }

    #[test]
    fn a_valid_body_becomes_a_trimmed_title_and_exact_cents() {
        let ticket = body(json!({"title": "  Concert  ", "price": 19.99})).unwrap();
        assert_eq!(ticket.title.as_str(), "Concert");
        assert_eq!(ticket.price.get(), 1999);
    }

    #[test]
    fn a_title_typed_composed_or_decomposed_is_one_title() {
        let decomposed = Title::parse(" Beyonce\u{301} live ").unwrap();
        assert_eq!(decomposed.as_str(), "Beyonc\u{e9} live");
        assert_eq!(decomposed, Title::parse("Beyonc\u{e9} live").unwrap());
    }

    #[test]
    fn titles_must_have_text_and_at_most_200_characters() {
        assert!(Title::parse("").is_err());
        assert!(Title::parse("   \t\n").is_err());
        assert!(Title::parse(&"x".repeat(201)).is_err());
        assert_eq!(Title::parse(&"x".repeat(200)).unwrap().as_str().len(), 200);
        // Characters, not bytes: 200 two-byte letters are still a valid title.
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert!(Title::from_json(Some(&json!(42))).is_err());
        assert!(Title::from_json(Some(&json!(null))).is_err());
        assert!(Title::from_json(None).is_err());
    }

    #[test]
    fn a_title_must_show_something_and_nothing_in_it_may_steer_the_text() {
        for blank in [
            "\u{200B}\u{200B}",
            " \u{FEFF} \u{200D} ",
            "\u{00AD}\u{2060}",
            "\u{3164}\u{3164}",
            "\u{115F}\u{FFA0}",
            "\u{E0041}\u{E0042}",
        ] {
            assert_eq!(
                Title::parse(blank),
                Err("Title is required".into()),
                "{blank:?}"
            );
        }
        for steering in [
            "Con\0cert",
            "Concert\u{1B}[31m",
            "Concert\u{7}",
            "Concert\u{7F}",
            "Concert \u{202E}llehS",
            "\u{2067}Concert",
            "\u{202E}",
            "\u{2066}\u{2069}",
        ] {
            assert_eq!(
                Title::parse(steering),
                Err("Title must not contain control or text-direction characters".into()),
                "{steering:?}"
            );
        }
        // Letters of any script, and emoji joined by zero-width joiners, are text.
        for fine in [
            "Жизель",
            "عرض",
            "Family show 👨\u{200D}👩\u{200D}👧",
            "Love \u{2764}\u{FE0F} tour",
        ] {
            assert!(Title::parse(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let errors = body(json!({"title": " ", "price": 0})).unwrap_err();
        assert_eq!(fields(&errors), ["title", "price"]);
        let errors = body(json!({})).unwrap_err();
        assert_eq!(fields(&errors), ["title", "price"]);
        let errors = body(json!({"title": "Concert", "price": "20"})).unwrap_err();
        assert_eq!(fields(&errors), ["price"]);
        let errors = body(json!({"title": "Concert", "price": 10.001})).unwrap_err();
        assert_eq!(fields(&errors), ["price"]);
        let errors = body(json!({"title": "Concert", "price": 1_000_000.01})).unwrap_err();
        assert_eq!(fields(&errors), ["price"]);
        let errors = body(json!({"title": "Concert", "price": -1})).unwrap_err();
        assert_eq!(fields(&errors), ["price"]);
    }

    #[test]
    fn a_listed_ticket_starts_at_version_0_unreserved() {
        let seller = Uuid::now_v7();
        let details = body(json!({"title": "Concert", "price": 20})).unwrap();
        let ticket = Ticket::listed(plain(details), seller, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(ticket.version, 0);
        assert_eq!(ticket.user_id, seller);
        assert!(!ticket.is_reserved());
        assert_eq!(ticket.created_event(None).version, 0);
        assert_eq!(ticket.updated_event().order_id, None);
    }

    #[test]
    fn a_ticket_on_the_wire_has_the_documented_shape() {
        let details = body(json!({"title": "Concert", "price": 15.5})).unwrap();
        let ticket = Ticket::listed(plain(details), Uuid::nil(), OffsetDateTime::UNIX_EPOCH);
        let json = serde_json::to_value(&ticket).unwrap();
        assert_eq!(json["price"], json!(15.5));
        assert_eq!(json["userId"], Uuid::nil().to_string());
        assert_eq!(json["orderId"], json!(null));
        assert_eq!(json["version"], 0);
        assert_eq!(json["createdAt"], "1970-01-01T00:00:00Z");
        assert_eq!(json.as_object().unwrap().len(), 7);
    }

    #[test]
    fn a_listing_for_an_event_carries_its_seat_and_shows_it() {
        let event = Uuid::now_v7();
        let listed = listing(
            json!({"title": "Concert", "price": 20, "eventId": event.to_string(),
            "section": " Floor A ", "row": "", "seat": "12"}),
        )
        .unwrap();
        let seat = Seat {
            section: Some("Floor A".into()),
            row: None,
            seat: Some("12".into()),
        };
        assert_eq!(listed.event, Some((event, seat)));
        let ticket = Ticket::listed(listed, Uuid::nil(), OffsetDateTime::UNIX_EPOCH);
        let json = serde_json::to_value(&ticket).unwrap();
        assert_eq!(json["eventId"], event.to_string());
        assert_eq!(json["section"], "Floor A");
        assert_eq!(json["seat"], "12");
        assert!(json.get("row").is_none(), "{json}");
        assert_eq!(json.as_object().unwrap().len(), 10);
    }

    #[test]
    fn a_listing_of_no_event_is_the_plain_ticket() {
        let listed = listing(json!({"title": "Concert", "price": 20, "eventId": null,
            "section": "  "}))
        .unwrap();
        assert_eq!(listed.event, None);
    }

    #[test]
    fn a_seat_needs_an_event_and_each_bad_part_is_named() {
        let errors = listing(json!({"title": "Concert", "price": 20, "seat": "12"})).unwrap_err();
        assert_eq!(fields(&errors), ["eventId"]);
        let errors = listing(json!({"title": "", "price": 20, "eventId": "nope",
            "section": 4, "row": "x".repeat(41), "seat": "1\u{7}"}))
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            ["title", "eventId", "section", "row", "seat"]
        );
    }
}
