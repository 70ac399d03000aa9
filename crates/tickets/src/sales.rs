//! The money side of selling: what each buyer paid, the marketplace's fee, and what is owed to
//! the seller, recorded when the ticket changes hands (paying it out is not done here); and the
//! cap on the price of a ticket listed again.

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
        hundredths(text)
            .filter(|basis_points| *basis_points <= 10_000)
            .map(|basis_points| Self { basis_points })
            .ok_or_else(|| {
                format!("{text:?} is not a percentage from 0 to 100 with at most two decimals")
            })
    }

    /// The fee on a sale at `price`, to the nearest cent (half a cent up).
    pub fn on(self, price: Cents) -> i64 {
        (price.get() * i64::from(self.basis_points) + 5_000) / 10_000
    }
}

/// How far above what was last paid for a ticket its owner may ask when listing it again: a
/// factor of that price, in hundredths (100: face value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResaleCap {
    hundredths: u32,
}

impl Default for ResaleCap {
    /// Face value, as several countries' laws and fan-first resale markets have it.
    fn default() -> Self {
        Self { hundredths: 100 }
    }
}

impl ResaleCap {
    /// A factor as `--resale-cap` takes it: more than 0, at most 100, at most two decimals
    /// (`1`, `1.1`).
    pub fn parse_factor(text: &str) -> Result<Self, String> {
        hundredths(text)
            .filter(|hundredths| (1..=10_000).contains(hundredths))
            .map(|hundredths| Self { hundredths })
            .ok_or_else(|| {
                format!("{text:?} is not a factor above 0, at most 100, with at most two decimals")
            })
    }

    /// The highest price a ticket last sold at `paid` may be listed at again, in cents (a
    /// fraction of a cent down).
    pub fn highest(self, paid: Cents) -> i64 {
        paid.get() * i64::from(self.hundredths) / 100
    }
}

/// A number written with at most two decimals and at most three digits before the point, in
/// hundredths.
fn hundredths(text: &str) -> Option<u32> {
    let text = text.trim();
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 {
        return None;
    }
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = format!("{fraction:0<2}").parse().ok()?;
    Some(whole * 100 + fraction)
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
    fn a_resale_cap_is_a_factor_of_what_was_paid() {
        let paid = Cents::new(3000).unwrap();
        assert_eq!(ResaleCap::default().highest(paid), 3000);
        assert_eq!(ResaleCap::parse_factor("1.1").unwrap().highest(paid), 3300);
        // 1.15 of 19.99 is 22.9885: a fraction of a cent down.
        let odd = Cents::new(1999).unwrap();
        assert_eq!(ResaleCap::parse_factor("1.15").unwrap().highest(odd), 2298);
        for text in ["0", "0.00", "100.01", "-1", "1.", "x"] {
            assert!(ResaleCap::parse_factor(text).is_err(), "{text}");
        }
        assert!(ResaleCap::parse_factor("0.5").is_ok());
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
