//! Tickets that changed hands: a ticket is its buyer's once the order is paid, and its owner may
//! send it on to another account by e-mail, or list it again at no more than the resale cap,
//! while they keep it (neither for sale nor held). Each change of hands is kept in the ticket's
//! history, which its owner may read.

use common::FieldError;
use common::money::{self, Cents};
use common::validate::{FieldErrors, Validate, normalise_email};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Ticket;

/// A ticket in its owner's wallet: `{…ticket, acquiredAt}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnedTicket {
    #[serde(flatten)]
    pub ticket: Ticket,
    /// When it became the owner's: its order was paid, or it was sent to them.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub acquired_at: OffsetDateTime,
    /// `kept` (its owner's, off the market: it may be sent or listed again), `listed` (for sale
    /// again) or `held` (an order holds it, for its buyer to pay).
    #[schema(example = "kept")]
    pub status: &'static str,
    /// The most it may be listed for again: the resale cap on what it last sold for.
    #[serde(serialize_with = "money::major_amount")]
    #[schema(value_type = f64)]
    pub max_resale_price: i64,
}

/// A change of hands as the ticket's owner reads it: `{kind, price?, at}`, `kind` being `sold`
/// (with what the buyer paid) or `sent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    #[schema(example = "sold")]
    pub kind: &'static str,
    /// What the buyer paid; absent when sent.
    #[serde(
        serialize_with = "money::major_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub price: Option<Cents>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// The body of `POST /api/tickets/{id}/resale`, as received.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"price": 79.5}))]
pub(crate) struct ResaleBody {
    /// In the currency's major unit, at most two decimals, and at most the ticket's
    /// `maxResalePrice`.
    #[serde(default)]
    #[schema(value_type = f64, required, minimum = 0.01, maximum = 1000000)]
    price: Option<serde_json::Value>,
}

impl Validate for ResaleBody {
    type Valid = Cents;

    fn validate(self) -> Result<Cents, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let price = errors.check("price", Cents::from_json(self.price.as_ref()));
        errors.into_result(price)
    }
}

/// How a ticket changed hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Bought: the order was paid, at the price it shows.
    Sold,
    /// Sent by its owner, for nothing.
    Sent,
}

impl Handover {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sold => "sold",
            Self::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Sold, Self::Sent]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// The last sale of a ticket: what was paid, and the order that paid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSale {
    pub price: Cents,
    pub order_id: Uuid,
}

/// One change of hands, as the ticket's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub ticket_id: Uuid,
    pub handover: Handover,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    /// What the buyer paid, in cents; none when sent.
    pub price_cents: Option<i64>,
    /// The order that paid for it; none when sent.
    pub order_id: Option<Uuid>,
    pub at: OffsetDateTime,
}

impl HistoryEntry {
    /// `ticket`, held by `order_id`, as it passes from its seller to `buyer`.
    pub fn sold(ticket: &Ticket, order_id: Uuid, buyer: Uuid, at: OffsetDateTime) -> Self {
        Self {
            ticket_id: ticket.id,
            handover: Handover::Sold,
            from_user_id: ticket.user_id,
            to_user_id: buyer,
            price_cents: Some(ticket.price.get()),
            order_id: Some(order_id),
            at,
        }
    }

    pub fn sent(ticket_id: Uuid, from: Uuid, to: Uuid, at: OffsetDateTime) -> Self {
        Self {
            ticket_id,
            handover: Handover::Sent,
            from_user_id: from,
            to_user_id: to,
            price_cents: None,
            order_id: None,
            at,
        }
    }
}

/// The body of `POST /api/tickets/{id}/send`, as received.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "sam@example.com"}))]
pub(crate) struct SendBody {
    /// The e-mail of the account to send the ticket to; compared without regard to case.
    #[serde(default)]
    #[schema(value_type = String, required, format = Email)]
    email: Option<serde_json::Value>,
}

/// Whom a ticket is sent to: an e-mail, normalised as accounts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub email: String,
}

impl Validate for SendBody {
    type Valid = Recipient;

    fn validate(self) -> Result<Recipient, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let email = match self.email {
            Some(serde_json::Value::String(text)) => Ok(normalise_email(&text)),
            None | Some(serde_json::Value::Null) => Err("Email is required".to_owned()),
            Some(_) => Err("Email must be text".to_owned()),
        }
        .and_then(|email| match email.as_str() {
            "" => Err("Email is required".to_owned()),
            // No account's under any rule, and PostgreSQL's text cannot hold it.
            _ if email.contains('\0') => Err("Email must be valid".to_owned()),
            _ => Ok(email),
        });
        let email = errors.check("email", email);
        errors.into_result(email.map(|email| Recipient { email }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(body: serde_json::Value) -> Result<Recipient, Vec<String>> {
        serde_json::from_value::<SendBody>(body)
            .unwrap()
            .validate()
            .map_err(|errors| errors.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn an_email_is_found_however_it_was_typed() {
        assert_eq!(
            recipient(serde_json::json!({"email": "  Sam@Example.COM "})),
            Ok(Recipient {
                email: "sam@example.com".into()
            })
        );
    }

    #[test]
    fn a_missing_blank_or_odd_email_is_refused() {
        for (body, message) in [
            (serde_json::json!({}), "Email is required"),
            (serde_json::json!({"email": null}), "Email is required"),
            (serde_json::json!({"email": "  "}), "Email is required"),
            (serde_json::json!({"email": 7}), "Email must be text"),
            (
                serde_json::json!({"email": "a\u{0}@b.c"}),
                "Email must be valid",
            ),
        ] {
            assert_eq!(
                recipient(body.clone()),
                Err(vec![message.to_owned()]),
                "{body}"
            );
        }
    }
}
