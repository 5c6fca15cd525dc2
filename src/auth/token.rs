//! Tokens: HS256 JWTs (R1.1, R1.2, R9.3). An access token carries who, where, which role, which session
//! and when; a refresh token carries who, which session and its own stored id (`jti`), and lives seven
//! days. Each names its purpose (`typ`), so neither is accepted where the other is expected, and the key
//! that signed it (`kid`), so the secret can be rotated: tokens of `INSIGHTS_JWT_SECRET_PREVIOUS` still
//! verify until they expire, and only the current secret signs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
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

/// The claims of a refresh token. It is also stored (as a digest, under `jti`), so it can be used once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub sub: Uuid,
    pub org: Uuid,
    pub sid: Uuid,
    /// The id of its row in `refresh_tokens`.
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Always `refresh`.
    pub typ: String,
}

/// Why a token was refused (all become 401; the reason is logged and counted only).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
}

/// One signing secret and the id tokens name it by.
#[derive(Clone)]
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            kid: key_id(secret),
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }
}

/// The id of a secret: 16 hex digits of a domain-separated SHA-256 of it. It tells the secrets apart and
/// says nothing about them.
pub fn key_id(secret: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"insights jwt key id\0");
    hash.update(secret);
    hex::encode(&hash.finalize()[..8])
}

/// The signing key and the keys tokens are verified with.
#[derive(Clone)]
pub struct TokenKeys {
    current: Key,
    previous: Option<Key>,
    validation: Validation,
}

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

impl TokenKeys {
    /// Keys that sign with `secret` and also verify tokens signed with `previous`.
    pub fn new(secret: &[u8], previous: Option<&[u8]>) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "jti"]);
        Ok(Self {
            current: Key::new(secret)?,
            previous: previous.map(Key::new).transpose()?,
            validation,
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.current.encoding)
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
        Ok((self.sign(&claims)?, claims))
    }

    /// Signs a refresh token of `session` whose stored id is `jti`, valid for `ttl` from `now`.
    pub fn issue_refresh(
        &self,
        user: UserId,
        org: OrganizationId,
        session: SessionId,
        jti: Uuid,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(String, RefreshClaims), jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let claims = RefreshClaims {
            sub: user.as_uuid(),
            org: org.as_uuid(),
            sid: session.as_uuid(),
            jti,
            iat,
            exp: iat + ttl.as_secs() as i64,
            typ: REFRESH.to_owned(),
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Checks an access token's key, signature, algorithm, expiry and purpose, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims: Claims = self.decode(token)?;
        if claims.typ != ACCESS {
            return Err(TokenError::Invalid("not an access token".to_owned()));
        }
        Ok(claims)
    }

    /// The same for a refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let claims: RefreshClaims = self.decode(token)?;
        if claims.typ != REFRESH {
            return Err(TokenError::Invalid("not a refresh token".to_owned()));
        }
        Ok(claims)
    }

    fn decode<T: DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(format!("{:?}", e.kind())))?;
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no key id".to_owned()))?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenError::Invalid("unknown key id".to_owned()))?;
        let data = jsonwebtoken::decode::<T>(token, &key.decoding, &self.validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            other => TokenError::Invalid(format!("{other:?}")),
        })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, None).unwrap()
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
        let other = TokenKeys::new(b"another-secret-another-secret-xx", None).unwrap();
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
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some(key_id(SECRET));
        let hs512 =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap();
        assert!(keys().verify(&hs512).is_err(), "only HS256 is accepted");
        assert!(keys().verify("garbage").is_err());

        // `alg: none` naming the right key.
        let none = format!(
            "{}.{payload}.",
            b64.encode(format!(
                r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
                key_id(SECRET)
            ))
        );
        assert!(keys().verify(&none).is_err());

        // RS/HS confusion: RS256 in the header, signed by HMAC with the shared secret (what a verifier
        // that takes the algorithm from the header would accept with the secret as "public key").
        let hmac_signed = |alg: &str| {
            let head = b64.encode(format!(
                r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#,
                key_id(SECRET)
            ));
            let message = format!("{head}.{payload}");
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(SECRET).unwrap(),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{message}.{signature}")
        };
        assert!(keys().verify(&hmac_signed("RS256")).is_err());
        // The same bytes with HS256 in the header do verify: the refusal above is the algorithm's.
        assert!(keys().verify(&hmac_signed("HS256")).is_ok());
    }

    #[test]
    fn a_token_without_or_with_a_wrong_key_id_is_refused() {
        let (token, claims) = issue(&keys(), Duration::from_secs(60), Utc::now());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(SECRET).as_str()));
        // Signed with the right secret, but naming no key or another one.
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let bare = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert_eq!(
            keys().verify(&bare),
            Err(TokenError::Invalid("no key id".to_owned()))
        );
        let mut other = Header::new(Algorithm::HS256);
        other.kid = Some("0011223344556677".to_owned());
        let wrong = jsonwebtoken::encode(&other, &claims, &key).unwrap();
        assert_eq!(
            keys().verify(&wrong),
            Err(TokenError::Invalid("unknown key id".to_owned()))
        );
        // Naming our key, signed with another secret.
        let mut ours = Header::new(Algorithm::HS256);
        ours.kid = Some(key_id(SECRET));
        let forged = jsonwebtoken::encode(
            &ours,
            &claims,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
        )
        .unwrap();
        assert!(matches!(keys().verify(&forged), Err(TokenError::Invalid(_))));
        assert_ne!(key_id(SECRET), key_id(b"another-secret-another-secret-xx"));
    }

    #[test]
    fn tokens_of_the_previous_secret_verify_until_it_is_dropped() {
        let old = keys();
        let (token, claims) = issue(&old, Duration::from_secs(60), Utc::now());
        let next_secret = b"the-next-secret-the-next-secret!";
        let rotated = TokenKeys::new(next_secret, Some(SECRET)).unwrap();
        assert_eq!(rotated.verify(&token), Ok(claims));
        // The previous secret verifies only: new tokens are signed with the current one.
        let (fresh, _) = issue(&rotated, Duration::from_secs(60), Utc::now());
        let header = jsonwebtoken::decode_header(&fresh).unwrap();
        assert_eq!(header.kid, Some(key_id(next_secret)));
        assert!(old.verify(&fresh).is_err());
        let dropped = TokenKeys::new(next_secret, None).unwrap();
        assert!(dropped.verify(&token).is_err());
        assert!(dropped.verify(&fresh).is_ok());
    }

    #[test]
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let keys = keys();
        let now = Utc::now();
        let (access, _) = issue(&keys, Duration::from_secs(60), now);
        let jti = Uuid::new_v4();
        let (refresh, claims) = keys
            .issue_refresh(
                UserId(Uuid::new_v4()),
                OrganizationId(Uuid::new_v4()),
                SessionId(Uuid::new_v4()),
                jti,
                Duration::from_secs(7 * 86_400),
                now,
            )
            .unwrap();
        assert_eq!(keys.verify_refresh(&refresh), Ok(claims.clone()));
        assert_eq!(claims.jti, jti);
        assert_eq!(claims.exp - claims.iat, 7 * 86_400);
        assert!(
            keys.verify(&refresh).is_err(),
            "a refresh token is no access token"
        );
        assert!(
            keys.verify_refresh(&access).is_err(),
            "an access token is no refresh token"
        );
        let (expired, _) = keys
            .issue_refresh(
                UserId(Uuid::new_v4()),
                OrganizationId(Uuid::new_v4()),
                SessionId(Uuid::new_v4()),
                jti,
                Duration::from_secs(60),
                now - chrono::Duration::seconds(120),
            )
            .unwrap();
        assert_eq!(keys.verify_refresh(&expired), Err(TokenError::Expired));
    }
}
