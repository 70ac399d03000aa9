//! The events services tell each other, and the one envelope they travel in:
//! `{id, type, occurredAt, data}`. The envelope id is the message id the bus de-duplicates by.
//! Prices in events are integer cents; times are RFC 3339 in UTC.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::money::Cents;

/// Every kind of event, with its name on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "ticket:created")]
    TicketCreated,
    #[serde(rename = "ticket:updated")]
    TicketUpdated,
    #[serde(rename = "order:created")]
    OrderCreated,
    #[serde(rename = "order:cancelled")]
    OrderCancelled,
    #[serde(rename = "order:completed")]
    OrderCompleted,
    #[serde(rename = "order:updated")]
    OrderUpdated,
    #[serde(rename = "expiration:complete")]
    ExpirationComplete,
    #[serde(rename = "payment:requested")]
    PaymentRequested,
    #[serde(rename = "payment:created")]
    PaymentCreated,
    #[serde(rename = "payment:failed")]
    PaymentFailed,
    #[serde(rename = "session:revoked")]
    SessionRevoked,
    #[serde(rename = "sessions:revoked")]
    SessionsRevoked,
    #[serde(rename = "user:created")]
    UserCreated,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        Self::TicketCreated,
        Self::TicketUpdated,
        Self::OrderCreated,
        Self::OrderCancelled,
        Self::OrderCompleted,
        Self::OrderUpdated,
        Self::ExpirationComplete,
        Self::PaymentRequested,
        Self::PaymentCreated,
        Self::PaymentFailed,
        Self::SessionRevoked,
        Self::SessionsRevoked,
        Self::UserCreated,
    ];

    /// The name on the wire, such as `ticket:created`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TicketCreated => "ticket:created",
            Self::TicketUpdated => "ticket:updated",
            Self::OrderCreated => "order:created",
            Self::OrderCancelled => "order:cancelled",
            Self::OrderCompleted => "order:completed",
            Self::OrderUpdated => "order:updated",
            Self::ExpirationComplete => "expiration:complete",
            Self::PaymentRequested => "payment:requested",
            Self::PaymentCreated => "payment:created",
            Self::PaymentFailed => "payment:failed",
            Self::SessionRevoked => "session:revoked",
            Self::SessionsRevoked => "sessions:revoked",
            Self::UserCreated => "user:created",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data of one kind of event.
pub trait EventData: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    const TYPE: EventType;
}

/// One event as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub data: T,
}

impl<T: EventData> Envelope<T> {
    /// Wraps event data with a fresh id and the current time.
    pub fn new(data: T) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: T::TYPE,
            occurred_at: OffsetDateTime::now_utc(),
            data,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads an envelope, refusing one whose type is not `T`'s.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Self = serde_json::from_slice(bytes)?;
        if envelope.event_type != T::TYPE {
            return Err(DecodeError::WrongType {
                expected: T::TYPE,
                found: envelope.event_type,
            });
        }
        Ok(envelope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("expected a {expected} event, found {found}")]
    WrongType {
        expected: EventType,
        found: EventType,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketCreated {
    pub id: Uuid,
    pub version: i64,
    pub title: String,
    pub price: Cents,
    pub user_id: Uuid,
    /// The event the ticket is for, if any; never changes. Left out when there is none, so a
    /// listing of no event reads as it did before events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// When that event starts, and with it the ticket's sale ends; never changes. Left out with
    /// `eventId`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub event_starts_at: Option<OffsetDateTime>,
}

impl EventData for TicketCreated {
    const TYPE: EventType = EventType::TicketCreated;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketUpdated {
    pub id: Uuid,
    pub version: i64,
    pub title: String,
    pub price: Cents,
    pub user_id: Uuid,
    pub order_id: Option<Uuid>,
    /// Which listing of the ticket this is: 0 as its seller listed it, one more each time an
    /// owner lists it again. Left out while 0, so the first listing reads as it did before.
    #[serde(default, skip_serializing_if = "is_first_listing")]
    pub listing: i64,
}

fn is_first_listing(listing: &i64) -> bool {
    *listing == 0
}

impl EventData for TicketUpdated {
    const TYPE: EventType = EventType::TicketUpdated;
}

/// The ticket as an order event names it: the title and price the buyer saw when placing the
/// order, which are what the order shows and charges whatever the seller does after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderTicket {
    pub id: Uuid,
    pub price: Cents,
    /// Absent from events written before orders kept their title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Where an order is in its life. `created` and `awaiting:payment` are live (they hold the
/// ticket); `cancelled` and `complete` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum OrderStatus {
    #[serde(rename = "created")]
    Created,
    #[serde(rename = "cancelled")]
    Cancelled,
    #[serde(rename = "awaiting:payment")]
    AwaitingPayment,
    #[serde(rename = "complete")]
    Complete,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Cancelled => "cancelled",
            Self::AwaitingPayment => "awaiting:payment",
            Self::Complete => "complete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Created,
            Self::Cancelled,
            Self::AwaitingPayment,
            Self::Complete,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Final statuses never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Complete)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub id: Uuid,
    pub version: i64,
    pub status: OrderStatus,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub ticket: OrderTicket,
    /// The listing of the ticket the order was placed on (see [`TicketUpdated::listing`]); an
    /// order of an earlier listing than the ticket's reserves nothing. Left out while 0.
    #[serde(default, skip_serializing_if = "is_first_listing")]
    pub listing: i64,
}

impl EventData for OrderCreated {
    const TYPE: EventType = EventType::OrderCreated;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRef {
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub id: Uuid,
    pub version: i64,
    pub ticket: TicketRef,
}

impl EventData for OrderCancelled {
    const TYPE: EventType = EventType::OrderCancelled;
}

/// An order was paid. Orders bumps the order's version when it completes; announcing it keeps
/// every replica of the order in version step, and tells tickets the ticket is now the buyer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCompleted {
    pub id: Uuid,
    pub version: i64,
    pub ticket: TicketRef,
    /// The buyer. Absent from events written before tickets changed hands on payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
}

impl EventData for OrderCompleted {
    const TYPE: EventType = EventType::OrderCompleted;
}

/// An order moved into or out of `awaiting:payment`: orders granted it to one payment
/// (`paymentId`), which alone may now charge it, or took the grant back after that payment failed
/// (status `created`, no `paymentId`). Announced, like every version bump, so that replicas stay
/// in version step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderUpdated {
    pub id: Uuid,
    pub version: i64,
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    pub ticket: TicketRef,
}

impl EventData for OrderUpdated {
    const TYPE: EventType = EventType::OrderUpdated;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationComplete {
    pub order_id: Uuid,
}

impl EventData for ExpirationComplete {
    const TYPE: EventType = EventType::ExpirationComplete;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCreated {
    pub id: Uuid,
    pub order_id: Uuid,
    pub stripe_id: String,
}

impl EventData for PaymentCreated {
    const TYPE: EventType = EventType::PaymentCreated;
}

/// A buyer asked to pay for an order: payments asks orders to grant the order to this payment,
/// and charges nothing until it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequested {
    pub id: Uuid,
    pub order_id: Uuid,
    /// Which attempt at paying the order this is; each one after the first begins only once the
    /// one before has ended, so a request of an older attempt arriving late is never granted.
    pub attempt: i64,
}

impl EventData for PaymentRequested {
    const TYPE: EventType = EventType::PaymentRequested;
}

/// A payment ended without a charge (declined, given up, or found uncharged by the reconciler):
/// orders takes back the grant it gave the payment, so that the order can be paid again, or
/// cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    pub id: Uuid,
    pub order_id: Uuid,
}

impl EventData for PaymentFailed {
    const TYPE: EventType = EventType::PaymentFailed;
}

/// A user signed out: the session `id` is over, and its token is refused until it expires at
/// `expiresAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRevoked {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl EventData for SessionRevoked {
    const TYPE: EventType = EventType::SessionRevoked;
}

/// A user signed out everywhere: every session of theirs begun under a generation below
/// `generation` is over. The last of those tokens expires by `expiresAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsRevoked {
    pub user_id: Uuid,
    pub generation: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl EventData for SessionsRevoked {
    const TYPE: EventType = EventType::SessionsRevoked;
}

/// Someone signed up: the services that find accounts by e-mail (a ticket sent to a friend) keep
/// this much of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub id: Uuid,
    /// Normalised as auth keeps it: trimmed, lower-cased, composed.
    pub email: String,
}

impl EventData for UserCreated {
    const TYPE: EventType = EventType::UserCreated;
}

/// What a replica does with another service's change that carries a version, given the version
/// it holds of that thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionStep {
    /// The very next version: apply it.
    Apply,
    /// This version or a later one is applied already: a duplicate or an old change, dropped.
    Stale,
    /// The thing, or a version before this one, has not arrived yet: ask for the event again
    /// later.
    Early,
}

/// Decides whether a change at version `incoming` applies to a replica holding `held` (`None`:
/// the replica does not have the thing yet). Only the very next version applies, so a replica
/// passes through every version in order, whatever order the events arrive in; this is why
/// every version bump is announced.
pub fn version_step(held: Option<i64>, incoming: i64) -> VersionStep {
    match held {
        Some(held) if held >= incoming => VersionStep::Stale,
        Some(held) if held == incoming - 1 => VersionStep::Apply,
        _ => VersionStep::Early,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_applies_only_the_next_version() {
        assert_eq!(version_step(Some(0), 1), VersionStep::Apply);
        assert_eq!(version_step(Some(4), 5), VersionStep::Apply);
        assert_eq!(version_step(Some(1), 1), VersionStep::Stale);
        assert_eq!(version_step(Some(2), 1), VersionStep::Stale);
        assert_eq!(version_step(Some(0), 2), VersionStep::Early);
        assert_eq!(version_step(None, 1), VersionStep::Early);
        assert_eq!(version_step(None, 0), VersionStep::Early);
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let envelope = Envelope::new(ExpirationComplete {
            order_id: Uuid::nil(),
        });
        let json: serde_json::Value = serde_json::from_slice(&envelope.encode().unwrap()).unwrap();
        assert_eq!(json["type"], "expiration:complete");
        assert_eq!(json["data"]["orderId"], Uuid::nil().to_string());
        assert!(json["occurredAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["id"], envelope.id.to_string());
    }

    #[test]
    fn an_event_round_trips_and_refuses_the_wrong_type() {
        let envelope = Envelope::new(TicketCreated {
            id: Uuid::now_v7(),
            version: 0,
            title: "Concert".into(),
            price: Cents::new(1999).unwrap(),
            user_id: Uuid::now_v7(),
            event_id: None,
            event_starts_at: None,
        });
        let bytes = envelope.encode().unwrap();
        assert_eq!(Envelope::<TicketCreated>::decode(&bytes).unwrap(), envelope);
        assert!(matches!(
            Envelope::<TicketUpdated>::decode(&bytes),
            Err(DecodeError::WrongType { .. })
        ));
        assert!(Envelope::<TicketCreated>::decode(b"{").is_err());
    }

    #[test]
    fn a_listing_names_its_event_and_start_or_neither() {
        let plain = TicketCreated {
            id: Uuid::nil(),
            version: 0,
            title: "Concert".into(),
            price: Cents::new(1999).unwrap(),
            user_id: Uuid::nil(),
            event_id: None,
            event_starts_at: None,
        };
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("eventId").is_none() && json.get("eventStartsAt").is_none());
        assert_eq!(
            serde_json::from_value::<TicketCreated>(json).unwrap(),
            plain
        );

        let of_event = TicketCreated {
            event_id: Some(Uuid::nil()),
            event_starts_at: Some(time::macros::datetime!(2030-06-13 00:00 UTC)),
            ..plain
        };
        let json = serde_json::to_value(&of_event).unwrap();
        assert_eq!(json["eventStartsAt"], "2030-06-13T00:00:00Z");
        assert_eq!(
            serde_json::from_value::<TicketCreated>(json).unwrap(),
            of_event
        );
    }

    #[test]
    fn order_statuses_use_their_wire_names() {
        for status in [
            OrderStatus::Created,
            OrderStatus::Cancelled,
            OrderStatus::AwaitingPayment,
            OrderStatus::Complete,
        ] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert!(OrderStatus::Complete.is_final() && !OrderStatus::Created.is_final());
    }

    #[test]
    fn every_type_name_parses_back() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
    }
}
