//! Random Unicode through the ticket title, the API's one free-text field: whatever is sent, the
//! answer is a success or a 400 in the error shape on the title, never a server error, and a
//! title that was stored reads back trimmed and composed (NFC). PostgreSQL is the stricter
//! store (it refuses a NUL), so both databases are tried.

use proptest::prelude::*;
use testkit::{Backend, Reply, json};
use unicode_normalization::UnicodeNormalization;

use crate::helpers::spawn_app;

testkit::each_database!(any_title_is_stored_normalised_or_refused_on_the_title_field);

/// Text that reaches the interesting cases: anything at all, and short mixes of letters,
/// combining accents, spaces, invisible characters, controls and direction overrides.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zé\\x{301}\\x{200B}\\x{FEFF}\\x{202E}\\x{2066}\\x{0}\\x{1B}\\x{7F} \\t\\n]{0,12}",
        "\\PC{0,250}",
    ]
}

/// What the answer to a title must be; the title as stored when it was taken.
fn check(reply: &Reply, sent: &str) -> Result<Option<String>, TestCaseError> {
    // Plain words are a title, whatever else is refused: the property is not met by refusing all.
    let words = sent.trim();
    if !words.is_empty()
        && words.chars().count() <= 200
        && words.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
    {
        prop_assert!(
            [200, 201].contains(&reply.status),
            "{sent:?}: {:?}",
            reply.body
        );
    }
    match reply.status {
        200 | 201 => {
            let expected = sent.nfc().collect::<String>().trim().to_owned();
            prop_assert_eq!(reply.body["title"].as_str(), Some(expected.as_str()));
            Ok(Some(expected))
        }
        400 => {
            let errors = reply.body["errors"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(errors.len(), 1, "{:?}", reply.body);
            prop_assert_eq!(errors[0]["field"].as_str(), Some("title"));
            prop_assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
            Ok(None)
        }
        status => Err(TestCaseError::fail(format!("{status}: {:?}", reply.body))),
    }
}

async fn any_title_is_stored_normalised_or_refused_on_the_title_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.sign_in();
    let (app, seller) = (&app, &seller);
    testkit::check_property(64, (text(), text()), |(listed, edited)| async move {
        let reply = seller
            .post("/api/tickets", json!({"title": listed, "price": 10}))
            .await;
        let Some(stored) = check(&reply, &listed)? else {
            return Ok(());
        };
        let id = reply.body["id"].as_str().unwrap_or_default().to_owned();
        let shown = app.ticket(&id).await;
        prop_assert_eq!(shown["title"].as_str(), Some(stored.as_str()));
        let path = format!("/api/tickets/{id}");
        let reply = seller
            .put(&path, json!({"title": edited, "price": 10}))
            .await;
        let kept = check(&reply, &edited)?.unwrap_or(stored);
        let shown = app.ticket(&id).await;
        prop_assert_eq!(shown["title"].as_str(), Some(kept.as_str()));
        Ok(())
    });
}
