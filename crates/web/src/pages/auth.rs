//! Signing up, signing in and out. The API sets and clears the session cookie; these pages pass
//! its `Set-Cookie` on to the browser.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{
    FieldErrors, Layout, PageError, PageForm, Visitor, redirect_with_cookies, render, safe_next,
};
use crate::Web;

#[derive(Template)]
#[template(path = "auth.html")]
struct AuthPage {
    layout: Layout,
    signup: bool,
    email: String,
    next: String,
    errors: FieldErrors,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// `GET /auth/signup`.
pub(crate) async fn get_signup(visitor: Visitor, Query(query): Query<NextQuery>) -> Response {
    show_form(&visitor, true, query.next.as_deref())
}

/// `GET /auth/signin`.
pub(crate) async fn get_signin(visitor: Visitor, Query(query): Query<NextQuery>) -> Response {
    show_form(&visitor, false, query.next.as_deref())
}

fn show_form(visitor: &Visitor, signup: bool, next: Option<&str>) -> Response {
    let next = safe_next(next);
    if visitor.user.is_some() {
        return Redirect::to(&next).into_response();
    }
    render(
        StatusCode::OK,
        &AuthPage {
            layout: visitor.layout(),
            signup,
            email: String::new(),
            next,
            errors: FieldErrors::default(),
        },
    )
}

/// `POST /auth/signup`.
pub(crate) async fn post_signup(
    State(web): State<Web>,
    visitor: Visitor,
    PageForm(form): PageForm<Credentials>,
) -> Result<Response, PageError> {
    submit(&web, &visitor, true, form).await
}

/// `POST /auth/signin`.
pub(crate) async fn post_signin(
    State(web): State<Web>,
    visitor: Visitor,
    PageForm(form): PageForm<Credentials>,
) -> Result<Response, PageError> {
    submit(&web, &visitor, false, form).await
}

async fn submit(
    web: &Web,
    visitor: &Visitor,
    signup: bool,
    form: Credentials,
) -> Result<Response, PageError> {
    let path = if signup {
        "/api/users/signup"
    } else {
        "/api/users/signin"
    };
    let body = json!({"email": form.email, "password": form.password});
    let reply = visitor.call(web, Method::POST, path, Some(&body)).await?;
    let next = safe_next(form.next.as_deref());
    if reply.status.is_success() {
        return Ok(redirect_with_cookies(&next, reply.set_cookies));
    }
    if reply.status.is_server_error() {
        return Err(PageError::Internal(format!(
            "{path} answered {}",
            reply.status
        )));
    }
    let status = reply.status;
    Ok(render(
        status,
        &AuthPage {
            layout: visitor.layout(),
            signup,
            email: form.email,
            next,
            errors: FieldErrors::from_reply(&reply, &["email", "password"]),
        },
    ))
}

/// `POST /auth/signout` (the header's button).
pub(crate) async fn post_signout(
    State(web): State<Web>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    sign_out_through(&web, &visitor, "/api/users/signout").await
}

/// `POST /auth/signout/everywhere` (the button on the orders page): ends every session of the
/// account, on every device.
pub(crate) async fn post_signout_everywhere(
    State(web): State<Web>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    sign_out_through(&web, &visitor, "/api/users/signout/everywhere").await
}

/// Signs out through the API. A sign-out the API could not record is shown as the failure it
/// is, never as done: the session would still work.
async fn sign_out_through(web: &Web, visitor: &Visitor, path: &str) -> Result<Response, PageError> {
    let reply = visitor.call(web, Method::POST, path, None).await?;
    if reply.status == StatusCode::UNAUTHORIZED {
        return Err(PageError::SignIn {
            next: "/orders".into(),
        });
    }
    if !reply.status.is_success() {
        return Err(PageError::Internal(format!(
            "signing out answered {}",
            reply.status
        )));
    }
    Ok(redirect_with_cookies("/", reply.set_cookies))
}
