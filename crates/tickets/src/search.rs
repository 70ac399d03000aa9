//! Search: what `GET /api/tickets` and `GET /api/events` take beside the page (`q`, `city`,
//! `from`, `to`, `maxPrice`, `sort`), checked field by field, and the words a ticket or an event
//! is found by.
//!
//! Words are reduced here, in one place for both databases (case, accents and punctuation
//! dropped, as event duplicate keys are), so that SQLite's FTS5 and PostgreSQL's `tsvector` find
//! the same rows. Each word of `q` must begin a word of the result: `radio` finds Radiohead.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use common::error::ApiError;
use common::money::Cents;
use common::validate::FieldErrors;
use serde::Deserialize;
use time::Date;
use time::macros::format_description;

use crate::event::loose;

/// The words `text` is found by, as stored.
pub(crate) fn words(text: &str) -> String {
    loose(text)
}

/// The words an event, and a ticket of it, is found by: its name, venue and city.
pub(crate) fn event_words(name: &str, venue: &str, city: &str) -> String {
    loose(&format!("{name} {venue} {city}"))
}

/// The day of a start on the venue's clocks (`2030-06-12T20:00:00-04:00`): `2030-06-12`.
pub(crate) fn local_date(local_starts_at: &str) -> &str {
    local_starts_at
        .split_once('T')
        .map_or(local_starts_at, |(day, _)| day)
}

/// The longest `q`, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 200;
/// The most words `q` may hold.
pub(crate) const MAX_QUERY_WORDS: usize = 10;
/// The longest `city`, in characters (as long as an event's city may be).
const MAX_CITY_CHARS: usize = 100;

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Newest listed (or created) first.
    Newest,
    /// Cheapest first.
    Price,
    /// Soonest event first.
    Date,
}

/// A valid search. Empty, it finds everything a list holds, in the list's own order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// Each must begin a word of a result, reduced as stored words are.
    pub words: Vec<String>,
    /// An event's city, reduced as stored.
    pub city: Option<String>,
    /// The first and last day of the event, on the venue's clocks, both included.
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub max_price: Option<Cents>,
    pub sort: Option<Sort>,
    /// The parameters as given, carried into the next page's link.
    given: Vec<(&'static str, String)>,
}

impl Search {
    /// Whether the search narrows a list by an event's city or date, which a ticket of no event
    /// has not.
    pub fn needs_an_event(&self) -> bool {
        self.city.is_some() || self.from.is_some() || self.to.is_some()
    }

    /// The words as an FTS5 query: every word, each as a prefix. Words hold only letters,
    /// digits and marks, and are quoted all the same.
    pub fn fts5_query(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The words as a PostgreSQL `tsquery`: every word, each as a prefix.
    pub fn tsquery(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("'{}':*", word.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" & ")
    }

    /// `path` with this search's parameters as given, for the next page's link.
    pub fn path_with_query(&self, path: &str) -> String {
        if self.given.is_empty() {
            return path.to_owned();
        }
        // Pairs of plain strings always encode.
        let query = serde_urlencoded::to_string(&self.given).unwrap_or_default();
        format!("{path}?{query}")
    }

    fn parse(query: SearchQuery) -> Result<Self, Vec<common::FieldError>> {
        let mut errors = FieldErrors::new();
        let mut given = Vec::new();
        // Text searched for may be left blank, as a search box is; a date, a price or an order
        // given must be one.
        let mut note = |name: &'static str, value: &Option<String>, blank_is_none: bool| {
            let value = value
                .as_deref()
                .map(|value| if blank_is_none { value.trim() } else { value })
                .filter(|value| !(blank_is_none && value.is_empty()));
            if let Some(value) = value {
                given.push((name, value.to_owned()));
            }
            value.map(str::to_owned)
        };
        let q = note("q", &query.q, true);
        let city = note("city", &query.city, true);
        let from = note("from", &query.from, false);
        let to = note("to", &query.to, false);
        let max_price = note("maxPrice", &query.max_price, false);
        let sort = note("sort", &query.sort, false);

        let query_words = match q {
            None => Some(Vec::new()),
            Some(q) => errors.check("q", query_words(&q)),
        };
        let city = city.and_then(|city| {
            errors.check(
                "city",
                if city.chars().count() > MAX_CITY_CHARS {
                    Err(format!("City must be at most {MAX_CITY_CHARS} characters"))
                } else {
                    Ok(words(&city))
                },
            )
        });
        let from = from.map(|raw| errors.check("from", date("From", &raw)));
        let to = to.map(|raw| errors.check("to", date("To", &raw)));
        if let (Some(Some(from)), Some(Some(to))) = (from, to)
            && from > to
        {
            errors.add("to", "To must be on or after from");
        }
        let max_price = max_price.map(|raw| errors.check("maxPrice", price(&raw)));
        let sort = sort.map(|raw| {
            errors.check(
                "sort",
                match raw.as_str() {
                    "newest" => Ok(Sort::Newest),
                    "price" => Ok(Sort::Price),
                    "date" => Ok(Sort::Date),
                    _ => Err("Sort must be one of price, date, newest".to_string()),
                },
            )
        });
        let search = query_words.map(|words| Self {
            words,
            city,
            from: from.flatten(),
            to: to.flatten(),
            max_price: max_price.flatten(),
            sort: sort.flatten(),
            given,
        });
        errors.into_result(search)
    }
}

/// The words of `q`, reduced: at least one, each holding a letter or a digit.
fn query_words(q: &str) -> Result<Vec<String>, String> {
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(format!(
            "Search must be at most {MAX_QUERY_CHARS} characters"
        ));
    }
    let words: Vec<String> = loose(q)
        .split_whitespace()
        .filter(|word| word.chars().any(char::is_alphanumeric))
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return Err("Search must hold a word of letters or digits".into());
    }
    if words.len() > MAX_QUERY_WORDS {
        return Err(format!("Search must be at most {MAX_QUERY_WORDS} words"));
    }
    Ok(words)
}

/// A day as `YYYY-MM-DD`, and nothing else (no sign, no fifth digit of year, no spaces).
fn date(label: &str, raw: &str) -> Result<Date, String> {
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| Date::parse(raw, format_description!("[year]-[month]-[day]")).ok())
        .flatten()
        .ok_or_else(|| format!("{label} must be a date such as 2030-06-12"))
}

/// A price in the currency's major unit, as in a body: `79.5`, without spaces around it.
fn price(raw: &str) -> Result<Cents, String> {
    let number: serde_json::Value = serde_json::from_str(raw)
        .ok()
        .filter(|_| raw.trim() == raw)
        .filter(serde_json::Value::is_number)
        .ok_or_else(|| "Max price must be a number".to_string())?;
    Cents::from_json(Some(&number)).map_err(|reason| reason.replacen("Price", "Max price", 1))
}

/// The query string as received: every value is text until checked, exactly as the OpenAPI
/// document describes it (`params(SearchQuery)`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// Words to find in a ticket's title or its event's name, venue or city (an event's name,
    /// venue or city), each as the start of a word, case and accents aside; up to 10 words.
    #[param(value_type = Option<String>, max_length = 200, example = "radiohead garden")]
    q: Option<String>,
    /// The event's city, case and accents aside.
    #[param(value_type = Option<String>, max_length = 100, example = "New York")]
    city: Option<String>,
    /// The first day of the event, on the venue's clocks.
    #[param(value_type = Option<String>, format = Date, example = "2030-06-01")]
    from: Option<String>,
    /// The last day of the event, on the venue's clocks; on or after `from`.
    #[param(value_type = Option<String>, format = Date, example = "2030-06-30")]
    to: Option<String>,
    /// The highest price, in the currency's major unit (for events: of their cheapest ticket
    /// for sale).
    #[serde(rename = "maxPrice")]
    #[param(rename = "maxPrice", value_type = Option<f64>, minimum = 0.01, maximum = 1000000)]
    max_price: Option<String>,
    /// `price` (cheapest first), `date` (soonest event first) or `newest`.
    #[param(value_type = Option<String>, pattern = "^(price|date|newest)$")]
    sort: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Search {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<SearchQuery>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::malformed("Malformed query string"))?;
        Self::parse(query).map_err(ApiError::Validation)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn search(pairs: &[(&str, &str)]) -> Result<Search, Vec<common::FieldError>> {
        let query = serde_urlencoded::to_string(pairs).unwrap();
        Search::parse(serde_urlencoded::from_str(&query).unwrap())
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<String> {
        search(pairs)
            .unwrap_err()
            .into_iter()
            .map(|error| error.field.unwrap())
            .collect()
    }

    #[test]
    fn words_are_reduced_as_stored_words_are_and_matched_as_prefixes() {
        let found = search(&[("q", "  Beyoncé, O'Brien!  ")]).unwrap();
        assert_eq!(found.words, ["beyonce", "o", "brien"]);
        assert_eq!(found.fts5_query(), r#""beyonce"* AND "o"* AND "brien"*"#);
        assert_eq!(found.tsquery(), "'beyonce':* & 'o':* & 'brien':*");
    }

    #[test]
    fn blank_words_or_city_are_no_search_but_a_blank_date_price_or_order_is_refused() {
        let blank = search(&[("q", " "), ("city", "")]).unwrap();
        assert_eq!(blank, Search::default());
        assert_eq!(blank.path_with_query("/api/tickets"), "/api/tickets");
        assert_eq!(
            fields(&[("from", ""), ("to", ""), ("maxPrice", ""), ("sort", "")]),
            ["from", "to", "maxPrice", "sort"]
        );
        assert_eq!(fields(&[("sort", " price")]), ["sort"]);
        assert_eq!(fields(&[("maxPrice", " 5")]), ["maxPrice"]);
        for day in [
            "-0001-01-01",
            "+2030-06-12",
            "2030-6-12",
            "20300-06-12",
            " 2030-06-12",
        ] {
            assert_eq!(fields(&[("from", day)]), ["from"], "{day}");
        }
    }

    #[test]
    fn every_bad_parameter_is_reported_at_once() {
        assert_eq!(
            fields(&[
                ("q", "!!!"),
                ("from", "12/06/2030"),
                ("to", "2030-02-30"),
                ("maxPrice", "cheap"),
                ("sort", "popular"),
            ]),
            ["q", "from", "to", "maxPrice", "sort"]
        );
        assert_eq!(
            fields(&[("from", "2030-06-12"), ("to", "2030-06-11")]),
            ["to"]
        );
        assert_eq!(fields(&[("maxPrice", "0")]), ["maxPrice"]);
        assert_eq!(fields(&[("maxPrice", "1.999")]), ["maxPrice"]);
        assert_eq!(fields(&[("q", &"a ".repeat(11))]), ["q"]);
        assert_eq!(fields(&[("q", &"a".repeat(201))]), ["q"]);
        assert_eq!(fields(&[("city", &"a".repeat(101))]), ["city"]);
    }

    #[test]
    fn a_valid_search_keeps_its_parameters_for_the_next_page() {
        let found = search(&[
            ("q", "Radiohead garden"),
            ("city", "New York"),
            ("from", "2030-06-12"),
            ("to", "2030-06-12"),
            ("maxPrice", "79.5"),
            ("sort", "price"),
        ])
        .unwrap();
        assert_eq!(found.city.as_deref(), Some("new york"));
        assert_eq!(found.from, found.to);
        assert_eq!(found.max_price, Some(Cents::new(7950).unwrap()));
        assert_eq!(found.sort, Some(Sort::Price));
        assert!(found.needs_an_event());
        assert_eq!(
            found.path_with_query("/api/events"),
            "/api/events?q=Radiohead+garden&city=New+York&from=2030-06-12&to=2030-06-12\
             &maxPrice=79.5&sort=price"
        );
    }
}
