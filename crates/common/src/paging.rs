//! Paged lists: `?limit=&cursor=`, newest first (or, for some lists, cheapest or soonest first).
//! The body stays a plain JSON array; the next page, when there is one, is named in a
//! `Link: <…>; rel="next"` header (RFC 8288).
//!
//! A cursor is the position of the last item shown (its sort key, such as its creation time, and
//! its id), so the next page starts strictly after it whatever was inserted meanwhile: every item
//! present when paging began is seen exactly once, unless its key changes meanwhile (a price). `offset` is still read, for clients written
//! before cursors.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, http::StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::validate::FieldErrors;

/// How many items a page holds when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items one page may hold.
pub const MAX_LIMIT: u32 = 100;

/// A position in a list ordered by a whole-number key (a creation time, a price in cents) then
/// id, both descending or both ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    key: i64,
    id: Uuid,
}

impl Cursor {
    /// Before every item: the start of the first page.
    pub const TOP: Self = Self {
        key: i64::MAX,
        id: Uuid::max(),
    };

    /// Before every item of a list in ascending order.
    pub const BOTTOM: Self = Self {
        key: i64::MIN,
        id: Uuid::nil(),
    };

    /// The position of the item with sort key `key` (a creation time in unix milliseconds, a
    /// price in cents) and `id`.
    pub fn at(key: i64, id: Uuid) -> Self {
        Self { key, id }
    }

    pub fn key(&self) -> i64 {
        self.key
    }

    /// The id as stored: canonical UUID text.
    pub fn id_text(&self) -> String {
        self.id.to_string()
    }

    /// Opaque to clients: 48 hex digits they pass back as they got them.
    pub fn encode(&self) -> String {
        // Times before 1970 do not occur; the cast keeps the bits either way and decode undoes it.
        format!("{:016x}{}", self.key as u64, self.id.simple())
    }

    pub fn decode(raw: &str) -> Option<Self> {
        if raw.len() != 48 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (time, id) = raw.split_at(16);
        Some(Self {
            key: u64::from_str_radix(time, 16).ok()? as i64,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// One page of a list, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    /// The page starts after this position.
    pub after: Cursor,
    pub offset: u32,
}

impl Page {
    /// The first `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            after: Cursor::TOP,
            offset: 0,
        }
    }

    /// Where a page of a list in ascending order starts: the first page, or after its cursor.
    pub fn after_ascending(&self) -> Cursor {
        if self.after == Cursor::TOP {
            Cursor::BOTTOM
        } else {
            self.after
        }
    }

    /// How many rows to read: one more than the page, to know whether another page follows.
    pub fn rows_to_read(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Cuts what was read (up to [`Page::rows_to_read`] rows) to the page, and names the next
    /// page of `path` (which may hold a query) when there is one.
    pub fn answer<T>(
        &self,
        mut rows: Vec<T>,
        path: &str,
        cursor: impl Fn(&T) -> Cursor,
    ) -> Paged<T> {
        let limit = self.limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            // The path may carry a query of its own (a search), which the next page keeps.
            let joint = if path.contains('?') { '&' } else { '?' };
            rows.last().map(|last| {
                format!(
                    "<{path}{joint}limit={}&cursor={}>; rel=\"next\"",
                    self.limit,
                    cursor(last).encode()
                )
            })
        } else {
            None
        };
        Paged { items: rows, next }
    }

    fn parse(query: PageQuery) -> Result<Self, ApiError> {
        let mut errors = FieldErrors::new();
        let limit = match query.limit.as_deref() {
            None => Some(DEFAULT_LIMIT),
            Some(raw) => errors.check(
                "limit",
                raw.parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| format!("Limit must be a whole number from 1 to {MAX_LIMIT}")),
            ),
        };
        let offset = match query.offset.as_deref() {
            None => Some(0),
            Some(raw) => errors.check(
                "offset",
                raw.parse::<u32>()
                    .map_err(|_| "Offset must be a whole number, 0 or more".to_string()),
            ),
        };
        let after = match query.cursor.as_deref() {
            None => Some(Cursor::TOP),
            Some(_) if query.offset.is_some() => {
                errors.add("cursor", "Give either a cursor or an offset, not both");
                None
            }
            Some(raw) => errors.check(
                "cursor",
                Cursor::decode(raw).ok_or_else(|| {
                    "Cursor must be one given in a Link header of this list".to_string()
                }),
            ),
        };
        let page = match (limit, after, offset) {
            (Some(limit), Some(after), Some(offset)) => Some(Self {
                limit,
                after,
                offset,
            }),
            _ => None,
        };
        errors.into_result(page).map_err(ApiError::Validation)
    }
}

/// The query string as received: every value is text until checked, exactly as the OpenAPI
/// document describes it (`params(PageQuery)`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items a page holds, 1 to 100; 50 when not given.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// Where the page starts: the `cursor` of the `Link` header of the page before. Opaque.
    #[param(value_type = Option<String>, pattern = "^[0-9a-fA-F]{48}$")]
    cursor: Option<String>,
    /// Deprecated: items to skip, for clients written before cursors; not with `cursor`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295.0)]
    offset: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::malformed("Malformed query string"))?;
        Self::parse(query)
    }
}

/// One page of a list: a JSON array, and the next page's `Link` when there is one.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Paged<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::OK, Json(self.items)).into_response();
        // The link is built from a path of ours, a URL-encoded query and hex digits, so it is
        // always a valid header.
        if let Some(link) = self.next.and_then(|link| HeaderValue::try_from(link).ok()) {
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }
}

/// The `rel="next"` target of a `Link` header value, as a path and query.
pub fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|param| matches!(param.trim(), "rel=\"next\"" | "rel=next"));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(target)
    })
}

/// The cursor a next page's path and query carries.
pub fn cursor_in(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("cursor="))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn page(
        limit: Option<&str>,
        cursor: Option<&str>,
        offset: Option<&str>,
    ) -> Result<Page, ApiError> {
        Page::parse(PageQuery {
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
            offset: offset.map(str::to_owned),
        })
    }

    fn fields(result: Result<Page, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().filter_map(|e| e.field).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_cursor_decodes_to_the_position_it_encodes() {
        let cursor = Cursor::at(1_780_000_000_123, Uuid::now_v7());
        let text = cursor.encode();
        assert_eq!(text.len(), 48);
        assert_eq!(Cursor::decode(&text), Some(cursor));
        assert_eq!(Cursor::decode(&Cursor::TOP.encode()), Some(Cursor::TOP));
        assert_eq!(
            Cursor::decode(&Cursor::BOTTOM.encode()),
            Some(Cursor::BOTTOM)
        );
    }

    #[test]
    fn an_ascending_list_starts_below_every_item_or_after_its_cursor() {
        assert_eq!(
            page(None, None, None).unwrap().after_ascending(),
            Cursor::BOTTOM
        );
        let cursor = Cursor::at(1999, Uuid::now_v7());
        let next = page(None, Some(&cursor.encode()), None).unwrap();
        assert_eq!(next.after_ascending(), cursor);
    }

    #[test]
    fn text_that_no_link_gave_is_no_cursor() {
        for raw in [
            "",
            "abc",
            &"g".repeat(48),
            &"0".repeat(47),
            &"0".repeat(49),
            "0000000000000001-0000-0000-0000-00000000000",
        ] {
            assert_eq!(Cursor::decode(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn no_query_is_the_first_page_of_the_default_size() {
        assert_eq!(page(None, None, None).unwrap(), Page::first(DEFAULT_LIMIT));
    }

    #[test]
    fn a_limit_outside_1_to_the_maximum_is_refused_on_its_field() {
        // Exactly as the OpenAPI document says: a whole number, nothing around it.
        for limit in ["0", "101", "-1", "ten", "1.5", " 100 "] {
            assert_eq!(fields(page(Some(limit), None, None)), ["limit"], "{limit}");
        }
        assert_eq!(page(Some("100"), None, None).unwrap().limit, 100);
    }

    #[test]
    fn a_cursor_is_refused_when_malformed_or_beside_an_offset() {
        let cursor = Cursor::at(5, Uuid::nil()).encode();
        assert_eq!(
            page(None, Some(&cursor), None).unwrap().after,
            Cursor::at(5, Uuid::nil())
        );
        assert_eq!(fields(page(None, Some("nope"), None)), ["cursor"]);
        assert_eq!(fields(page(None, Some(&cursor), Some("0"))), ["cursor"]);
        assert_eq!(
            fields(page(Some("0"), Some("nope"), Some("x"))),
            ["limit", "offset", "cursor"]
        );
    }

    #[test]
    fn a_full_page_names_the_next_one_after_its_last_item() {
        let rows: Vec<i64> = (0..4).rev().collect();
        let at = |n: &i64| Cursor::at(*n, Uuid::nil());
        let paged = Page::first(3).answer(rows, "/api/things", at);
        assert_eq!(paged.items, [3, 2, 1]);
        let link = paged.next.unwrap();
        let expected = format!("/api/things?limit=3&cursor={}", at(&1).encode());
        assert_eq!(next_link(&link), Some(expected.as_str()));
        assert_eq!(cursor_in(&expected), Some(at(&1).encode().as_str()));

        let last = Page::first(3).answer(vec![0_i64, 1, 2], "/api/things", at);
        assert_eq!((last.items.len(), last.next), (3, None));
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let header = r#"</a?x=1>; rel="prev", </b?cursor=2>; rel="next""#;
        assert_eq!(next_link(header), Some("/b?cursor=2"));
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
    }
}
