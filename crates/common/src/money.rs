//! Money. Inside Stubs an amount is an integer number of cents; on the HTTP wire it is a JSON
//! number in the currency's major unit with at most two decimals (`20`, `15.5`, `19.99`).
//! Never floating point arithmetic: 19.99 × 100 is not 1999.

use serde::{Deserialize, Serialize, Serializer};

/// The highest price a ticket may have, in cents (1,000,000.00).
pub const MAX_CENTS: i64 = 100_000_000;

/// An amount in cents, always greater than zero and at most `MAX_CENTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Cents(i64);

impl Cents {
    pub fn new(cents: i64) -> Result<Self, String> {
        if cents <= 0 {
            Err("Price must be greater than 0".into())
        } else if cents > MAX_CENTS {
            Err("Price must be at most 1000000".into())
        } else {
            Ok(Self(cents))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// Parses a price as a client sends it: a JSON number in major units.
    pub fn from_json(value: Option<&serde_json::Value>) -> Result<Self, String> {
        let number = match value {
            None | Some(serde_json::Value::Null) => return Err("Price is required".into()),
            Some(serde_json::Value::Number(number)) => number,
            Some(_) => return Err("Price must be a number".into()),
        };
        // serde_json prints the shortest text that reads back as the same number, so the decimal
        // digits a client typed survive: 19.99 prints as "19.99", never 19.989999...
        let text = number.to_string();
        if text.starts_with('-') {
            return Err("Price must be greater than 0".into());
        }
        // Only a number too small (under 0.00001) or too large to print plainly prints with an
        // exponent.
        if let Some((_, exponent)) = text.split_once(['e', 'E']) {
            return Err(if exponent.starts_with('-') {
                "Price must have at most two decimals".into()
            } else {
                "Price must be at most 1000000".into()
            });
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        if whole.len() > 9 {
            return Err("Price must be at most 1000000".into());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 2 {
            return Err("Price must have at most two decimals".into());
        }
        let whole: i64 = whole
            .parse()
            .map_err(|_| "Price must be a number".to_string())?;
        let fraction_cents: i64 = format!("{fraction:0<2}")
            .parse()
            .map_err(|_| "Price must be a number".to_string())?;
        Self::new(whole * 100 + fraction_cents)
    }

    /// The amount as a client reads it: an integer when whole, else two decimals at most.
    pub fn to_json(self) -> serde_json::Value {
        major_units(self.0)
    }
}

impl TryFrom<i64> for Cents {
    type Error = String;
    fn try_from(cents: i64) -> Result<Self, String> {
        Self::new(cents)
    }
}

impl Serialize for Cents {
    /// Events carry cents as an integer.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

/// Serializes cents as major units on the HTTP wire: `#[serde(serialize_with = "money::major")]`.
pub fn major<S: Serializer>(cents: &Cents, serializer: S) -> Result<S::Ok, S::Error> {
    cents.to_json().serialize(serializer)
}

/// [`major`] for an amount that may be zero, such as a fee.
pub fn major_amount<S: Serializer>(cents: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    major_units(*cents).serialize(serializer)
}

/// An amount as a person types or reads it in a message: `30`, `19.99`, `0.50`.
pub fn plain(cents: i64) -> String {
    if cents % 100 == 0 {
        format!("{}", cents / 100)
    } else {
        format!("{}.{:02}", cents / 100, cents % 100)
    }
}

/// Cents as major units: an integer when whole, else two decimals at most.
fn major_units(cents: i64) -> serde_json::Value {
    if cents % 100 == 0 {
        serde_json::Value::from(cents / 100)
    } else {
        // A value with at most two decimals prints exactly (shortest round-trip form).
        serde_json::Value::from(cents as f64 / 100.0)
    }
}

/// [`major`] for an amount that may be missing, which is `null` on the wire.
pub fn major_or_null<S: Serializer>(
    cents: &Option<Cents>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    cents.map(Cents::to_json).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<i64, String> {
        Cents::from_json(Some(&value)).map(Cents::get)
    }

    #[test]
    fn prices_become_exact_cents() {
        assert_eq!(parse(json!(20)), Ok(2000));
        assert_eq!(parse(json!(15.5)), Ok(1550));
        assert_eq!(parse(json!(19.99)), Ok(1999));
        assert_eq!(parse(json!(0.01)), Ok(1));
        assert_eq!(parse(json!(1.10)), Ok(110));
        assert_eq!(parse(json!(1000000)), Ok(100_000_000));
        assert_eq!(
            parse(serde_json::from_str("1e2").unwrap_or_default()),
            Ok(10000)
        );
    }

    #[test]
    fn bad_prices_are_refused_with_a_reason() {
        assert!(parse(json!(0)).is_err());
        assert!(parse(json!(-5)).is_err());
        assert!(parse(json!(19.999)).is_err());
        assert!(parse(json!(0.001)).is_err());
        assert!(parse(json!(1000000.01)).is_err());
        assert!(parse(json!(1e300)).is_err());
        assert!(parse(json!("20")).is_err());
        assert!(Cents::from_json(None).is_err());
    }

    #[test]
    fn a_price_in_exponent_form_is_refused_for_what_is_wrong_with_it() {
        let read = |text: &str| parse(serde_json::from_str(text).unwrap_or_default());
        assert_eq!(
            read("1e-7"),
            Err("Price must have at most two decimals".into())
        );
        assert_eq!(
            read("1E-9"),
            Err("Price must have at most two decimals".into())
        );
        assert_eq!(read("1e300"), Err("Price must be at most 1000000".into()));
        assert_eq!(read("2.5e1"), Ok(2500));
    }

    #[test]
    fn cents_print_as_major_units() {
        assert_eq!(Cents(2000).to_json().to_string(), "20");
        assert_eq!(Cents(1550).to_json().to_string(), "15.5");
        assert_eq!(Cents(1999).to_json().to_string(), "19.99");
        assert_eq!(Cents(1).to_json().to_string(), "0.01");
    }

    #[test]
    fn every_cent_value_round_trips_through_the_wire() {
        for cents in (1..200_000).chain(MAX_CENTS - 1000..=MAX_CENTS) {
            assert_eq!(parse(Cents(cents).to_json()), Ok(cents), "{cents}");
        }
    }
}
