//! The pages: what every page shares (the visitor, the layout, field errors, the error pages and
//! redirects), and one module per part of the site.

pub(crate) mod auth;
pub(crate) mod events;
pub(crate) mod orders;
pub(crate) mod tickets;
pub(crate) mod wallet;

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::Web;
use crate::api::{ApiCallError, ApiReply, Caller};
use crate::assets;
use crate::headers::Policy;

/// Who is looking at a page: their session (forwarded to the API), and who they are if signed in.
pub(crate) struct Visitor {
    pub caller: Caller,
    pub user: Option<User>,
    /// The page asked for, to come back to after signing in.
    pub here: String,
}

/// A signed-in user, as the API's `currentuser` tells.
pub(crate) struct User {
    pub id: String,
    pub email: String,
}

impl Visitor {
    /// The layout for this visitor's pages.
    pub(crate) fn layout(&self) -> Layout {
        Layout {
            user: self.user.as_ref().map(|u| u.email.clone()),
            stylesheet: assets::STYLESHEET.clone(),
            request_key: new_request_key(),
        }
    }

    /// The signed-in user, or a redirect to sign in and back to this page.
    pub(crate) fn signed_in(&self) -> Result<&User, PageError> {
        self.user.as_ref().ok_or_else(|| PageError::SignIn {
            next: self.here.clone(),
        })
    }

    /// Calls the API for this visitor with the key a form sent, if it sent one. While the first
    /// request with that key is still running (409), asks again for up to 10 s, so that the
    /// second of two clicks is answered what the first was.
    pub(crate) async fn call_keyed(
        &self,
        web: &Web,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<ApiReply, PageError> {
        let mut reply = web
            .api
            .call_keyed(method.clone(), path, &self.caller, body, key)
            .await?;
        for _ in 0..100 {
            if reply.status != StatusCode::CONFLICT || key.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            reply = web
                .api
                .call_keyed(method.clone(), path, &self.caller, body, key)
                .await?;
        }
        Ok(reply)
    }

    /// Calls the API for this visitor.
    pub(crate) async fn call(
        &self,
        web: &Web,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiReply, PageError> {
        Ok(web.api.call(method, path, &self.caller, body).await?)
    }
}

impl FromRequestParts<Web> for Visitor {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, PageError> {
        let session = CookieJar::from_headers(&parts.headers)
            .get(common::session::COOKIE_NAME)
            .map(|cookie| cookie.value().to_owned())
            .filter(|value| !value.is_empty());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|OriginalUri(uri)| uri)
            .unwrap_or(&parts.uri);
        let here = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let caller = Caller { session, peer };
        // Without a cookie nobody is signed in: no need to ask.
        let user = match caller.session {
            None => None,
            Some(_) => {
                let reply = web
                    .api
                    .call(Method::GET, "/api/users/currentuser", &caller, None)
                    .await?;
                let current = &reply.body["currentUser"];
                match (current["id"].as_str(), current["email"].as_str()) {
                    (Some(id), Some(email)) => Some(User {
                        id: id.to_owned(),
                        email: email.to_owned(),
                    }),
                    _ => None,
                }
            }
        };
        Ok(Self { caller, user, here })
    }
}

/// What the base template needs.
pub(crate) struct Layout {
    /// The signed-in user's e-mail.
    pub user: Option<String>,
    pub stylesheet: String,
    /// Made anew for each page shown, and sent by its forms (with the form's name after it) as
    /// the API's Idempotency-Key: a form sent twice, by a double click or a resend, acts once.
    pub request_key: String,
}

fn new_request_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Layout {
    /// The layout of a page shown without knowing the visitor (error pages).
    pub(crate) fn anonymous() -> Self {
        Self {
            user: None,
            stylesheet: assets::STYLESHEET.clone(),
            request_key: new_request_key(),
        }
    }
}

/// Validation messages of a form: each next to its field, the rest above the form.
#[derive(Debug, Default)]
pub(crate) struct FieldErrors {
    fields: Vec<(String, String)>,
    general: Vec<String>,
}

impl FieldErrors {
    /// Sorts the API's messages into the form's fields (`known`) and the rest.
    pub(crate) fn from_reply(reply: &ApiReply, known: &[&str]) -> Self {
        let mut errors = Self::default();
        for (field, message) in reply.errors() {
            match field {
                Some(field) if known.contains(&field.as_str()) => {
                    errors.fields.push((field, message))
                }
                _ => errors.general.push(message),
            }
        }
        if errors.fields.is_empty() && errors.general.is_empty() {
            errors
                .general
                .push("Something went wrong, please try again".into());
        }
        errors
    }

    /// One message for one field.
    pub(crate) fn on(field: &str, message: impl Into<String>) -> Self {
        Self {
            fields: vec![(field.to_owned(), message.into())],
            general: Vec::new(),
        }
    }

    /// A message about the form as a whole.
    pub(crate) fn general(message: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            general: vec![message.into()],
        }
    }

    /// The message for a field, if any.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, message)| message.as_str())
    }

    pub(crate) fn messages(&self) -> &[String] {
        &self.general
    }
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("not found")]
    NotFound,
    #[error("cross-site form post")]
    Forbidden,
    #[error("sign in first")]
    SignIn { next: String },
    /// A form post that could not be read: too large (413), not a form (415), or with fields
    /// missing or malformed (anything else, shown as 400).
    #[error("form not readable ({0})")]
    BadForm(StatusCode),
    #[error("{0}")]
    Internal(String),
}

/// A form post. One the framework cannot read is answered with a page that says why, like every
/// other failure of a page, rather than the framework's plain text turned into JSON.
pub(crate) struct PageForm<T>(pub T);

/// A form whose only field is the key its page gave it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyedForm {
    pub request_key: Option<String>,
}

/// The key a form was given when its page was shown, as the API takes it: `None` when missing
/// or not one of ours.
pub(crate) fn request_key(sent: &Option<String>) -> Option<&str> {
    sent.as_deref().filter(|key| {
        (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

impl<T, S> FromRequest<S> for PageForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        match Form::<T>::from_request(request, state).await {
            Ok(Form(form)) => Ok(Self(form)),
            Err(rejection) => Err(PageError::BadForm(rejection.status())),
        }
    }
}

impl From<ApiCallError> for PageError {
    fn from(err: ApiCallError) -> Self {
        Self::Internal(err.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    heading: &'static str,
    message: &'static str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match self {
            Self::SignIn { next } => {
                return Redirect::to(&format!("/auth/signin?next={}", encode(&next)))
                    .into_response();
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here. The ticket or order may have been removed, or the link is wrong.",
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form was sent from another site, so it was not accepted. Go back to Stubs and try again there.",
            ),
            Self::BadForm(StatusCode::PAYLOAD_TOO_LARGE) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "What you sent was too large to accept. Go back, shorten it and try again.",
            ),
            Self::BadForm(StatusCode::UNSUPPORTED_MEDIA_TYPE) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Form not accepted",
                "This address takes a form sent from its page. Go back to the page and send it from there.",
            ),
            Self::BadForm(_) => (
                StatusCode::BAD_REQUEST,
                "Form not accepted",
                "Part of the form was missing or could not be read. Go back, check every field and try again.",
            ),
            Self::Internal(reason) => {
                tracing::error!(%reason, "a page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "We could not show this page. Please try again in a moment.",
                )
            }
        };
        let page = ErrorPage {
            layout: Layout::anonymous(),
            status: status.as_u16(),
            heading,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            // The error page is static; should it ever fail, a plain status still tells the truth.
            Err(_) => status.into_response(),
        }
    }
}

/// Renders a page with a status.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => PageError::Internal(format!("template: {err}")).into_response(),
    }
}

/// A redirect after a POST that also hands the browser the API's cookies.
pub(crate) fn redirect_with_cookies(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = Redirect::to(to).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Where to go after signing in: a path of this site only, never another site (`//evil`).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => "/".into(),
    }
}

/// Percent-encodes a path for a query parameter.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An id from a page path. Anything but a UUID names nothing (and never reaches an API path).
pub(crate) fn parse_id(raw: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(raw).map_err(|_| PageError::NotFound)
}

/// The fallback: the API's JSON 404 under `/api`, the 404 page elsewhere.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return common::ApiError::NotFound.into_response();
    }
    let mut response = PageError::NotFound.into_response();
    Policy::without_stripe().apply(response.headers_mut());
    response
}

/// A list page's place in the list: the API's cursor, carried through the page's own links.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    cursor: Option<String>,
}

impl PageQuery {
    /// A place in a list given by a cursor read elsewhere (a search's).
    pub(crate) fn from_cursor(cursor: Option<String>) -> Self {
        Self { cursor }
    }

    /// The cursor, when it is one the API gave; anything else shows the first page.
    pub(crate) fn cursor(&self) -> Option<&str> {
        let cursor = self.cursor.as_deref()?.trim();
        common::paging::Cursor::decode(cursor).map(|_| cursor)
    }

    /// The API's list at `path`, from this place in it.
    pub(crate) fn api_path(&self, path: &str, limit: u32) -> String {
        match self.cursor() {
            Some(cursor) => format!("{path}?limit={limit}&cursor={cursor}"),
            None => format!("{path}?limit={limit}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_we_go_only_to_our_own_pages() {
        assert_eq!(safe_next(Some("/orders/1?x=2")), "/orders/1?x=2");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_way_back_is_encoded() {
        assert_eq!(encode("/orders?page=2"), "/orders%3Fpage%3D2");
    }
}
