//! Access tokens: HS256 JWTs carrying who, where, which role, which session, and when (R1.1, R9.3).

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OrganizationId, Role, SessionId, UserId};

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The user's organization.
    pub org: Uuid,
    /// The role at issue time; authorization re-reads it from the database (through the cache).
    pub role: Role,
    /// The token's own id.
    pub jti: Uuid,
    /// The login session the token belongs to; revoking it revokes the token.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Always `access`, so a token minted for another purpose cannot be replayed here.
    pub typ: String,
}

impl Claims {
    /// Returns the user id.
    pub fn user_id(&self) -> UserId {
        UserId(self.sub)
    }

    /// Returns the session id.
    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }

    /// Returns the organization id.
    pub fn organization_id(&self) -> OrganizationId {
        OrganizationId(self.org)
    }
}

/// Why a token was refused (all become 401; the reason is logged and counted only).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
}

/// The signing and verification keys.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

const ACCESS: &str = "access";

impl TokenKeys {
    /// Builds keys from the shared secret.
    pub fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// Signs an access token valid for `ttl` from `now`.
    pub fn issue(
        &self,
        user: UserId,
        org: OrganizationId,
        role: Role,
        session: SessionId,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let claims = Claims {
            sub: user.as_uuid(),
            org: org.as_uuid(),
            role,
            jti: Uuid::new_v4(),
            sid: session.as_uuid(),
            iat,
            exp: iat + ttl.as_secs() as i64,
            typ: ACCESS.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm and expiry, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                other => TokenError::Invalid(format!("{other:?}")),
            }
        })?;
        if data.claims.typ != ACCESS {
            return Err(TokenError::Invalid("not an access token".to_owned()));
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn issue(keys: &TokenKeys, ttl: Duration, now: DateTime<Utc>) -> (String, Claims) {
        keys.issue(
            UserId(Uuid::new_v4()),
            OrganizationId(Uuid::new_v4()),
            Role::Analyst,
            SessionId(Uuid::new_v4()),
            ttl,
            now,
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_every_claim() {
        let keys = keys();
        let now = Utc::now();
        let (token, claims) = issue(&keys, Duration::from_secs(3600), now);
        let back = keys.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.exp - back.iat, 3600);
        assert_eq!(back.role, Role::Analyst);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = keys();
        let (token, _) = issue(
            &keys,
            Duration::from_secs(60),
            Utc::now() - chrono::Duration::seconds(120),
        );
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_signed_with_another_secret_or_tampered_are_refused() {
        let (token, _) = issue(&keys(), Duration::from_secs(60), Utc::now());
        let other = TokenKeys::new(b"another-secret-another-secret-xx").unwrap();
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid(_))));

        // Swap the payload for one claiming another role: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["role"] = "admin".into();
        let forged = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
        assert!(matches!(keys().verify(&forged), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn unsigned_and_other_algorithm_tokens_are_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (token, _) = issue(&keys(), Duration::from_secs(60), Utc::now());
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
        assert!(keys().verify(&none).is_err());

        let claims: Claims = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap();
        assert!(keys().verify(&hs512).is_err(), "only HS256 is accepted");
        assert!(keys().verify("garbage").is_err());
    }
}
