//! Users and the validated values they are made of.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::validation::{CONTROL_CLASS, WHITESPACE_CLASS, trimmed_text_pattern};
use super::{OrganizationId, Role, UserId};

/// An email address, trimmed and lowercased; compared and stored in this form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest accepted address, in bytes of UTF-8, once trimmed and lowercased.
    pub const MAX_BYTES: usize = 254;

    /// Checks the shape `local@domain.tld` and normalizes case and surrounding space.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let valid_shape = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
        if email.len() > Self::MAX_BYTES
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
            || !valid_shape
        {
            return Err("must be an email address".to_owned());
        }
        Ok(Self(email))
    }

    /// The pattern of the shape [`Self::parse`] accepts (its length, counted in bytes, is not a pattern's
    /// business): one `@`, no whitespace or control character inside, a domain with a dot that neither
    /// starts nor ends it.
    pub fn pattern() -> String {
        let ws = WHITESPACE_CLASS;
        let local = format!("[^@{ws}{CONTROL_CLASS}]");
        let dot_free = format!("[^@.{ws}{CONTROL_CLASS}]");
        format!("^[{ws}]*{local}+@{dot_free}{local}*\\.{local}*{dot_free}[{ws}]*$")
    }

    /// Returns the normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 8 to 72 bytes, since bcrypt ignores everything past 72 bytes and a silently
/// truncated password is weaker than its owner believes.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Shortest accepted password, in characters.
    pub const MIN_CHARS: usize = 8;
    /// Longest accepted password, in bytes (bcrypt's limit).
    pub const MAX_BYTES: usize = 72;

    /// Checks the length rules.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(format!("must be at least {} characters", Self::MIN_CHARS));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(format!("must be at most {} bytes", Self::MAX_BYTES));
        }
        // bcrypt implementations stop at U+0000, and no keyboard types the others.
        if raw.chars().any(char::is_control) {
            return Err(super::validation::NO_CONTROLS_MESSAGE.to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    /// Returns the plain password, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A display name: 1 to 200 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Longest accepted name, in characters, once trimmed.
    pub const MAX_CHARS: usize = 200;

    /// Trims and checks the name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if name.chars().any(char::is_control) {
            return Err(super::validation::NO_CONTROLS_MESSAGE.to_owned());
        }
        Ok(Self(name.to_owned()))
    }

    /// Returns the trimmed name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pattern of what [`Self::parse`] accepts, for the OpenAPI document.
    pub fn pattern() -> String {
        trimmed_text_pattern(Self::MAX_CHARS)
    }
}

/// A user as the API shows it (never with its password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[schema(value_type = String, format = Uuid)]
    pub organization_id: OrganizationId,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_respect_bcrypt_limits() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(36)).is_ok(), "72 bytes is the limit");
        assert!(Password::parse(&"é".repeat(37)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("12345678").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("a\u{0}b").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_patterns_accept_what_the_parsers_accept(raw in crate::domain::validation::tests::tricky_text(205)) {
            let name = regex::Regex::new(&PersonName::pattern()).unwrap();
            proptest::prop_assert_eq!(name.is_match(&raw), PersonName::parse(&raw).is_ok(), "{:?}", raw);
            let email = regex::Regex::new(&Email::pattern()).unwrap();
            let short_enough = raw.trim().to_lowercase().len() <= Email::MAX_BYTES;
            proptest::prop_assert_eq!(email.is_match(&raw) && short_enough, Email::parse(&raw).is_ok(), "{:?}", raw);
        }

        #[test]
        fn the_email_pattern_accepts_what_the_parser_accepts(
            local in crate::domain::validation::tests::tricky_text(4),
            domain in crate::domain::validation::tests::tricky_text(4),
        ) {
            let raw = format!("{local}@{domain}");
            let email = regex::Regex::new(&Email::pattern()).unwrap();
            proptest::prop_assert_eq!(email.is_match(&raw), Email::parse(&raw).is_ok(), "{:?}", raw);
        }
    }
}
