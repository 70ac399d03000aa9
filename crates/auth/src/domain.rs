//! Sign-up and sign-in input: an e-mail address normalised so that one person has one account
//! whatever the case or spaces they type, a password within bounds, and, for a new account, one
//! that is not among the first a guesser would try.

use common::FieldError;
use common::validate::{FieldErrors, Validate, is_control_or_bidi, is_invisible, normalise_email};
use serde::Deserialize;

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 128;
/// zxcvbn's score 2: a password that takes a guesser at least a million tries.
const MIN_PASSWORD_SCORE: zxcvbn::Score = zxcvbn::Score::Two;

/// An e-mail address, trimmed, in Unicode's composed form (NFC) and lower-cased, so that one
/// address typed two ways (é as one character or as e and an accent) is one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// An address for a new account: normalised, and checked.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = normalise_email(raw);
        // The syntax is RFC 5322's, less what no one signs up with: a display name
        // ("Me <me@example.com>"), an address literal (me@[127.0.0.1]), a quoted local part
        // ("me"@example.com) or a domain without a dot. What the syntax allows but a person never
        // means to type (invisible and control characters, direction overrides) is refused on
        // top, and so is an address longer than mail can carry (254 bytes).
        let options = email_address::Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        let valid = email.len() <= 254
            && !email.starts_with('"')
            && email_address::EmailAddress::parse_with_options(&email, options).is_ok()
            && !email
                .chars()
                .any(|c| c.is_whitespace() || is_control_or_bidi(c) || is_invisible(c));
        if valid {
            Ok(Self(email))
        } else {
            Err("Email must be valid".into())
        }
    }

    /// An address to sign in with: normalised only. An account made under an earlier, looser
    /// rule still signs in, and an address no account has is simply not found. One with a NUL
    /// character is no account's under any rule (PostgreSQL's text cannot hold it, and the
    /// database would refuse the very query), so it is refused as sign-up refuses it.
    pub fn for_sign_in(raw: &str) -> Result<Self, String> {
        let email = normalise_email(raw);
        if email.is_empty() {
            Err("Email is required".into())
        } else if email.contains('\0') {
            Err("Email must be valid".into())
        } else {
            Ok(Self(email))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of sign-up and sign-in, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = Credentials, example = json!({"email": "ana@example.com", "password": "violet-harbour-31"}))]
pub(crate) struct RawCredentials {
    /// An e-mail address; compared without regard to case.
    #[schema(value_type = String, required, format = Email, max_length = 254)]
    email: Option<String>,
    /// 8 to 128 characters. Sign-up also refuses one too easy to guess.
    #[schema(value_type = String, required, min_length = 8, max_length = 128)]
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
        self.validate_with(Email::parse)
    }
}

/// The body of sign-in: as sign-up's, but the e-mail is only normalised (see
/// [`Email::for_sign_in`]).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct RawSignIn(RawCredentials);

impl Validate for RawSignIn {
    type Valid = Credentials;

    fn validate(self) -> Result<Credentials, Vec<FieldError>> {
        self.0.validate_with(Email::for_sign_in)
    }
}

impl RawCredentials {
    fn validate_with(
        self,
        email_rule: fn(&str) -> Result<Email, String>,
    ) -> Result<Credentials, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let email = errors.check(
            "email",
            self.email
                .ok_or_else(|| "Email is required".to_string())
                .and_then(|raw| email_rule(&raw)),
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

/// Passwords that are long enough yet among the first tried by anyone guessing: the most
/// common ones in published breach lists, lower-cased. Runs and repeats are caught by rule.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "1qaz2wsx",
    "zaq12wsx",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "starwars",
    "welcome1",
    "welcome123",
    "letmein1",
    "trustno1",
    "admin123",
    "administrator",
    "abc12345",
    "abcd1234",
    "asdfghjkl",
    "asdf1234",
    "qwer1234",
    "1234qwer",
    "12341234",
    "12344321",
    "11223344",
    "123123123",
    "1234567890",
    "0987654321",
    "michelle",
    "jennifer",
    "computer",
    "whatever",
    "internet",
    "changeme",
    "master123",
    "dragon123",
    "monkey123",
    "shadow123",
];

/// Why a new password would be easy to guess, if it would: one that is only spaces, one or two
/// characters over and over, a run (`12345678`, `abcdefgh`), one of the most common passwords,
/// one that starts with the account's own e-mail name, or one a guesser's model (zxcvbn) finds
/// in fewer than a million guesses, such as a common password with a digit or year added (NIST SP
/// 800-63B, 5.1.1.2). Checked when an account is made, never at sign-in, so that nothing tells a
/// guesser which rule a password broke. Up to a few milliseconds for a long password: call it off
/// the request's thread.
pub(crate) fn guessable(password: &str, email: &Email) -> Option<String> {
    let folded = password.to_lowercase();
    let chars: Vec<char> = folded.chars().filter(|c| !c.is_whitespace()).collect();
    if chars.is_empty() {
        return Some("Password must not be only spaces".into());
    }
    let distinct: std::collections::HashSet<&char> = chars.iter().collect();
    if distinct.len() <= 2 {
        return Some("Password must not repeat one or two characters".into());
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|pair| i64::from(u32::from(pair[1])) - i64::from(u32::from(pair[0])))
        .collect();
    if steps.iter().all(|&step| step == 1) || steps.iter().all(|&step| step == -1) {
        return Some("Password must not be a run of characters such as 12345678".into());
    }
    // Compared without its spaces, so that " password" is as common as "password".
    let compact: String = chars.iter().collect();
    if COMMON_PASSWORDS.contains(&compact.as_str()) {
        return Some("Password is one of the most common; choose another".into());
    }
    // The address's own name at the start ("adalovelace1"), not anywhere: "anna" may well use
    // "savannah-2024".
    let (local, _) = email
        .as_str()
        .split_once('@')
        .unwrap_or((email.as_str(), ""));
    if local.chars().count() >= 4 && compact.starts_with(local) {
        return Some("Password must not start with your e-mail address".into());
    }
    let estimate = zxcvbn::zxcvbn(password, &[local, "stubs"]);
    if estimate.score() < MIN_PASSWORD_SCORE {
        let why = estimate
            .feedback()
            .and_then(zxcvbn::feedback::Feedback::warning)
            .map_or_else(|| "Add another word or two.".to_owned(), |w| w.to_string());
        return Some(format!("Password is too easy to guess. {why}"));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.as_str().to_owned()),
            Ok("ada@example.com".to_owned())
        );
    }

    #[test]
    fn an_address_typed_composed_or_decomposed_is_one_address() {
        let composed = Email::parse("Ren\u{E9}e@example.com").unwrap();
        let decomposed = Email::parse("Rene\u{301}e@example.com").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "ren\u{e9}e@example.com");
    }

    #[test]
    fn addresses_with_hidden_or_steering_characters_are_refused() {
        for bad in [
            "ada\u{200B}@example.com",
            "ada@exa\u{FEFF}mple.com",
            "ada\u{202E}moc.elpmaxe@evil.com",
            "ada\u{0}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn addresses_the_standard_allows_are_accepted() {
        for good in [
            "ada+tickets@example.com",
            "o'brien@example.ie",
            "ada@mail.example.co.uk",
            "\u{f6}zil@b\u{fc}cher.de",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn an_address_past_254_bytes_is_refused_and_sign_in_only_normalises() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert!(Email::parse(&long).is_err());
        // An account made under an earlier rule still signs in.
        assert_eq!(
            Email::for_sign_in(" Ada.@Example.com ").map(|e| e.as_str().to_owned()),
            Ok("ada.@example.com".to_owned())
        );
        assert!(Email::for_sign_in("  ").is_err());
        assert!(Email::for_sign_in("ada\0@example.com").is_err());
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
            "Ada<ada@example.com>",
            "\"ada\"@example.com",
            "ada@[127.0.0.1]",
            "ada.@example.com",
            "ada@-example.com",
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

    proptest::proptest! {
        #[test]
        fn an_address_normalised_once_is_normalised_for_good(raw in "\\PC{0,12}|[Jj\u{30C}\u{301}\u{130}\u{3A3}e\u{C9} ]{0,8}") {
            let once = normalise_email(&raw);
            proptest::prop_assert_eq!(normalise_email(&once), once);
        }
    }

    #[test]
    fn a_letter_and_its_accent_apart_after_lower_casing_are_composed() {
        assert_eq!(
            normalise_email("J\u{30C}@example.com"),
            "\u{1F0}@example.com"
        );
    }

    #[test]
    fn easily_guessed_passwords_are_named() {
        let email = Email::parse("adalovelace@example.com").unwrap();
        for (password, reason) in [
            ("        ", "only spaces"),
            ("aaaaaaaa", "repeat one or two characters"),
            ("abababab", "repeat one or two characters"),
            ("12345678", "run of characters"),
            ("hgfedcba", "run of characters"),
            ("password", "most common"),
            ("PassWord1", "most common"),
            (" password ", "most common"),
            ("1234567890", "most common"),
            ("adalovelace1", "e-mail address"),
            ("password1234", "This is a very common password"),
            ("sunshine88", "similar to a commonly used password"),
            ("12345679", "too easy to guess"),
        ] {
            let named = guessable(password, &email);
            assert!(
                named.as_deref().is_some_and(|why| why.contains(reason)),
                "{password:?}: {named:?}"
            );
        }
    }

    #[test]
    fn passwords_that_are_not_easily_guessed_pass() {
        let email = Email::parse("ada@example.com").unwrap();
        for password in ["correct horse", "load-generator-password", "adalbert99"] {
            assert_eq!(guessable(password, &email), None, "{password:?}");
        }
        let anna = Email::parse("anna@example.com").unwrap();
        assert_eq!(guessable("savannah-2024", &anna), None);
    }
}
