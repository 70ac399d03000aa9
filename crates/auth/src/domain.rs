//! Sign-up and sign-in input: an e-mail address normalised so that one person has one account
//! whatever the case or spaces they type, and a password within bounds.

use common::FieldError;
use common::validate::{FieldErrors, Validate};
use serde::Deserialize;

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 128;

/// An e-mail address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && domain.split('.').all(|label| !label.is_empty())
                }
                None => false,
            };
        if valid {
            Ok(Self(email))
        } else {
            Err("Email must be valid".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of sign-up and sign-in, as sent.
#[derive(Debug, Deserialize)]
pub struct RawCredentials {
    email: Option<String>,
    password: Option<String>,
}

/// A valid e-mail and a password of acceptable length.
#[derive(Debug)]
pub struct Credentials {
    pub email: Email,
    pub password: String,
}

impl Validate for RawCredentials {
    type Valid = Credentials;

    fn validate(self) -> Result<Credentials, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let email = errors.check(
            "email",
            self.email
                .ok_or_else(|| "Email is required".to_string())
                .and_then(|raw| Email::parse(&raw)),
        );
        let password = errors.check(
            "password",
            match self.password {
                None => Err("Password is required".to_string()),
                Some(p) if (MIN_PASSWORD..=MAX_PASSWORD).contains(&p.chars().count()) => Ok(p),
                Some(_) => Err(format!(
                    "Password must be between {MIN_PASSWORD} and {MAX_PASSWORD} characters"
                )),
            },
        );
        errors.into_result(
            email
                .zip(password)
                .map(|(email, password)| Credentials { email, password }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.as_str().to_owned()),
            Ok("ada@example.com".to_owned())
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example..com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let raw = RawCredentials {
            email: Some("nope".into()),
            password: Some("short".into()),
        };
        let errors = raw.validate().err().unwrap_or_default();
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[test]
    fn password_bounds_count_characters() {
        let ok = |p: &str| {
            RawCredentials {
                email: Some("a@b.co".into()),
                password: Some(p.into()),
            }
            .validate()
            .is_ok()
        };
        assert!(ok("12345678"));
        assert!(!ok("1234567"));
        assert!(ok(&"é".repeat(128)));
        assert!(!ok(&"é".repeat(129)));
    }
}
