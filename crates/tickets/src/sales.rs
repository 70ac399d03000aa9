//! The seller's side of a sale: what each buyer paid, the marketplace's fee, and what is owed to
//! the seller, recorded when the ticket changes hands. Paying it out is not done here.

use common::money::{self, Cents};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// The marketplace's fee on a sale, in basis points (hundredths of a percent) of its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SellerFee {
    basis_points: u32,
}

impl SellerFee {
    /// A fee given in percent, as `--seller-fee-percent` takes it: 0 to 100, at most two
    /// decimals (`2.5`).
    pub fn parse_percent(text: &str) -> Result<Self, String> {
        let refuse =
            || format!("{text:?} is not a percentage from 0 to 100 with at most two decimals");
        let text = text.trim();
        let (whole, fraction) = match text.split_once('.') {
            Some((_, "")) => return Err(refuse()),
            Some(parts) => parts,
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 {
            return Err(refuse());
        }
        if !digits(whole) || !digits(fraction) {
            return Err(refuse());
        }
        let whole: u32 = whole.parse().map_err(|_| refuse())?;
        let fraction: u32 = format!("{fraction:0<2}").parse().map_err(|_| refuse())?;
        let basis_points = whole * 100 + fraction;
        if basis_points > 10_000 {
            return Err(refuse());
        }
        Ok(Self { basis_points })
    }

    /// The fee on a sale at `price`, to the nearest cent (half a cent up).
    pub fn on(self, price: Cents) -> i64 {
        (price.get() * i64::from(self.basis_points) + 5_000) / 10_000
    }
}

/// A sale as its seller sees it: `{orderId, ticketId, title, price, fee, owed, soldAt, payout}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sale {
    pub order_id: Uuid,
    pub ticket_id: Uuid,
    /// The ticket's title as it was sold.
    pub title: String,
    /// What the buyer paid.
    #[serde(serialize_with = "money::major")]
    #[schema(value_type = f64)]
    pub price: Cents,
    /// The marketplace's fee, kept from the price.
    #[serde(serialize_with = "money::major_amount")]
    #[schema(value_type = f64)]
    pub fee: i64,
    /// What is owed to the seller: the price less the fee.
    #[serde(serialize_with = "money::major_amount")]
    #[schema(value_type = f64)]
    pub owed: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sold_at: OffsetDateTime,
    /// `owed` until it is paid out.
    pub payout: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fee_is_read_in_percent_to_two_decimals() {
        for (text, basis_points) in [
            ("0", 0),
            ("2.5", 250),
            ("10", 1_000),
            ("0.01", 1),
            ("100", 10_000),
        ] {
            assert_eq!(
                SellerFee::parse_percent(text),
                Ok(SellerFee { basis_points }),
                "{text}"
            );
        }
        for text in ["", "-1", "100.01", "2.555", "1e2", "ten", ".5", "5."] {
            assert!(SellerFee::parse_percent(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_fee_is_rounded_to_the_nearest_cent() {
        let fee = SellerFee::parse_percent("2.5").unwrap();
        assert_eq!(fee.on(Cents::new(2000).unwrap()), 50);
        // 2.5% of 0.99 is 2.475 cents.
        assert_eq!(fee.on(Cents::new(99).unwrap()), 2);
        assert_eq!(fee.on(Cents::new(20).unwrap()), 1);
        assert_eq!(SellerFee::default().on(Cents::new(2000).unwrap()), 0);
        let all = SellerFee::parse_percent("100").unwrap();
        assert_eq!(all.on(Cents::new(1999).unwrap()), 1999);
    }
}
