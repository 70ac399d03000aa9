//! Sessions: an HS256 JWT holding `id`, `email`, `sid`, `gen`, `iat` and `exp`, carried in an
//! HttpOnly, SameSite=Lax cookie named `session` or as `Authorization: Bearer`. Every service
//! verifies the token itself with the shared key, and refuses one its own database says was
//! revoked ([`crate::revocation`]); nothing calls the auth service.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::revocation::Revocations;

pub const COOKIE_NAME: &str = "session";

/// What a session token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub id: Uuid,
    pub email: String,
    /// The session, which sign-out revokes.
    pub sid: Uuid,
    /// The user's session generation at sign-in; signing out everywhere revokes every session of
    /// a lower one.
    #[serde(rename = "gen")]
    pub generation: i64,
    pub iat: i64,
    pub exp: i64,
}

/// Issues and verifies session tokens. Cheap to clone; clones share the revocations heard of.
#[derive(Clone)]
pub struct Sessions {
    keys: Arc<Keys>,
    revoked: Revocations,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
    cookie_secure: bool,
}

impl Sessions {
    pub fn new(secret: &SecretString, lifetime: Duration, cookie_secure: bool) -> Self {
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat"]);
        Self {
            keys: Arc::new(Keys {
                encoding: EncodingKey::from_secret(key),
                decoding: DecodingKey::from_secret(key),
                validation,
                lifetime,
                cookie_secure,
            }),
            revoked: Revocations::default(),
        }
    }

    /// The same keys with revocations of its own, still to be read from the service's tables:
    /// each service refuses what its own database says was revoked, even when services share a
    /// process.
    pub fn with_own_revocations(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            revoked: Revocations::unread(),
        }
    }

    /// The revocations this verifier refuses.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// How long a token lives.
    pub fn lifetime(&self) -> Duration {
        self.keys.lifetime
    }

    /// Signs a token for a new session of a user, valid from now for the configured lifetime.
    pub fn issue(
        &self,
        id: Uuid,
        email: &str,
        generation: i64,
    ) -> Result<(String, Claims), ApiError> {
        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        let lifetime = i64::try_from(self.keys.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            id,
            email: email.to_owned(),
            sid: Uuid::new_v4(),
            generation,
            iat,
            exp: iat.saturating_add(lifetime),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
                .map_err(ApiError::internal)?;
        Ok((token, claims))
    }

    /// The claims of a valid, unexpired, unrevoked token signed with our key; `None` for
    /// anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
            .ok()
            .map(|data| data.claims)
            .filter(|claims| !self.revoked.covers(claims))
    }

    /// The cookie that carries a freshly issued token.
    pub fn cookie(&self, token: String) -> Cookie<'static> {
        let max_age = time::Duration::try_from(self.keys.lifetime).unwrap_or(time::Duration::DAY);
        Cookie::build((COOKIE_NAME, token))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.keys.cookie_secure)
            .max_age(max_age)
            .build()
    }

    /// A cookie that makes the browser forget the session.
    pub fn removal_cookie(&self) -> Cookie<'static> {
        Cookie::build((COOKIE_NAME, ""))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.keys.cookie_secure)
            .max_age(time::Duration::ZERO)
            .build()
    }

    /// The claims of the session a request carries, if it carries a valid one: the token is read
    /// from the bearer header, else the cookie. A request with a token waits, the first time,
    /// until the service has read its revocations.
    pub async fn from_parts(&self, parts: &Parts) -> Option<Claims> {
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let jar;
        let token = match bearer {
            Some(token) => token.trim(),
            None => {
                jar = CookieJar::from_headers(&parts.headers);
                jar.get(COOKIE_NAME)?.value()
            }
        };
        self.revoked.read().await;
        self.verify(token)
    }
}

/// The signed-in user, if any.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Option<Claims>);

impl<S> FromRequestParts<S> for CurrentUser
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Sessions::from_ref(state).from_parts(parts).await))
    }
}

/// The signed-in user; a request without a valid session is answered 401.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Claims);

impl<S> FromRequestParts<S> for SignedIn
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Sessions::from_ref(state)
            .from_parts(parts)
            .await
            .map(Self)
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(secret: &str, lifetime: Duration) -> Sessions {
        Sessions::new(&SecretString::from(secret), lifetime, true)
    }

    #[test]
    fn a_token_verifies_with_its_own_key_only() {
        let ours = sessions("one secret of enough length", Duration::from_secs(3600));
        let theirs = sessions("another secret entirely!!", Duration::from_secs(3600));
        let id = Uuid::now_v7();
        let (token, claims) = ours.issue(id, "a@b.co", 0).unwrap();
        assert_eq!(ours.verify(&token), Some(claims));
        assert_eq!(theirs.verify(&token), None);
        assert_eq!(ours.verify("not.a.token"), None);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let short = sessions("one secret of enough length", Duration::ZERO);
        let (token, _) = short.issue(Uuid::now_v7(), "a@b.co", 0).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.verify(&token), None);
    }

    #[test]
    fn the_cookie_is_http_only_same_site_lax_and_secure() {
        let cookie = sessions("k", Duration::from_secs(60)).cookie("t".into());
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.name(), "session");
    }
}
