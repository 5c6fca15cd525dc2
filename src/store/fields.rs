//! Customers' sensitive fields encrypted at rest (R9.9): `name`, `email` and `attributes` are stored as
//! AES-256-GCM ciphertexts, each with a fresh random nonce and, as associated data, the organization,
//! the customer and the column, so a ciphertext copied to another row, column or tenant does not decrypt.
//! A sealed value is `1 ‖ key id (4 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`: the key id says which
//! of `INSIGHTS_DATA_KEY` and `INSIGHTS_DATA_KEY_PREVIOUS` opens it, so a key can be rotated while the
//! node runs (`insights rotate-data-key`). Exact email lookups use a keyed blind index (HMAC-SHA256 of the
//! organization and the lowercased address), never the address.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::Error;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The columns sealed, named in the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Name,
    Email,
    Attributes,
}

impl Column {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "customers.name",
            Self::Email => "customers.email",
            Self::Attributes => "customers.attributes",
        }
    }
}

/// One data key: its id, the AEAD key, and the key of its blind index.
struct DataKey {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
    index: hmac::Key,
}

impl DataKey {
    fn new(key: &[u8; 32]) -> Result<Self, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| Error::internal(anyhow::anyhow!("the data key is not an AES-256 key")))?;
        let derive = hmac::Key::new(hmac::HMAC_SHA256, key);
        let index = hmac::sign(&derive, b"insights blind index v1");
        Ok(Self {
            id: key_id(key),
            aead: LessSafeKey::new(unbound),
            index: hmac::Key::new(hmac::HMAC_SHA256, index.as_ref()),
        })
    }
}

/// The id of a data key: 4 bytes of a domain-separated SHA-256 of it (says nothing about the key).
pub fn key_id(key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let mut hash = Sha256::new();
    hash.update(b"insights data key id\0");
    hash.update(key);
    let digest = hash.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The data keys of a node: the current one seals, both open.
pub struct FieldKeys {
    current: DataKey,
    previous: Option<DataKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for FieldKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldKeys")
            .field("current", &hex::encode(self.current.id))
            .field("previous", &self.previous.as_ref().map(|k| hex::encode(k.id)))
            .finish()
    }
}

impl FieldKeys {
    pub fn new(current: &[u8; 32], previous: Option<&[u8; 32]>) -> Result<Self, Error> {
        Ok(Self {
            current: DataKey::new(current)?,
            previous: previous.map(DataKey::new).transpose()?,
            random: SystemRandom::new(),
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> [u8; KEY_ID_LEN] {
        self.current.id
    }

    /// The ids of every key that opens.
    pub fn ids(&self) -> Vec<[u8; KEY_ID_LEN]> {
        std::iter::once(self.current.id)
            .chain(self.previous.as_ref().map(|k| k.id))
            .collect()
    }

    fn aad(org: Uuid, customer: Uuid, column: Column) -> Vec<u8> {
        let mut aad = Vec::with_capacity(48);
        aad.extend_from_slice(org.as_bytes());
        aad.extend_from_slice(customer.as_bytes());
        aad.extend_from_slice(column.as_str().as_bytes());
        aad
    }

    /// Seals `plain` for `column` of customer `customer` of organization `org`.
    pub fn seal(&self, org: Uuid, customer: Uuid, column: Column, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Error::internal(anyhow::anyhow!("no randomness for a nonce")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + AES_256_GCM.tag_len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(org, customer, column)),
                &mut body,
            )
            .map_err(|_| Error::internal(anyhow::anyhow!("sealing {} failed", column.as_str())))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed value; a value of an unknown key, of another row, column or tenant, or tampered
    /// with, is an error (never garbage).
    pub fn open(&self, org: Uuid, customer: Uuid, column: Column, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = |why: &str| {
            Error::Decryption(format!(
                "cannot decrypt {} of customer {customer}: {why}",
                column.as_str()
            ))
        };
        if sealed.len() < HEADER_LEN + AES_256_GCM.tag_len() || sealed[0] != VERSION {
            return Err(fail("not a sealed value"));
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                fail(&format!(
                    "sealed with key {}, which is not configured",
                    hex::encode(id)
                ))
            })?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let mut body = sealed[HEADER_LEN..].to_vec();
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(org, customer, column)),
                &mut body,
            )
            .map_err(|_| fail("authentication failed (another row, tenant or key, or tampered)"))?;
        Ok(plain.to_vec())
    }

    /// Seals an optional text.
    pub fn seal_text(
        &self,
        org: Uuid,
        customer: Uuid,
        column: Column,
        text: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        text.map(|t| self.seal(org, customer, column, t.as_bytes()))
            .transpose()
    }

    /// Opens an optional sealed text.
    pub fn open_text(
        &self,
        org: Uuid,
        customer: Uuid,
        column: Column,
        sealed: Option<&[u8]>,
    ) -> Result<Option<String>, Error> {
        sealed
            .map(|s| {
                let plain = self.open(org, customer, column, s)?;
                String::from_utf8(plain)
                    .map_err(|_| Error::internal(anyhow::anyhow!("{} is not UTF-8", column.as_str())))
            })
            .transpose()
    }

    /// Seals a JSON value (`{}` is stored as nothing).
    pub fn seal_json(
        &self,
        org: Uuid,
        customer: Uuid,
        value: &serde_json::Value,
    ) -> Result<Option<Vec<u8>>, Error> {
        if value.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        let text = serde_json::to_vec(value).map_err(Error::internal)?;
        self.seal(org, customer, Column::Attributes, &text).map(Some)
    }

    /// Opens sealed attributes (nothing is `{}`).
    pub fn open_json(
        &self,
        org: Uuid,
        customer: Uuid,
        sealed: Option<&[u8]>,
    ) -> Result<serde_json::Value, Error> {
        match sealed {
            None => Ok(serde_json::json!({})),
            Some(s) => {
                let plain = self.open(org, customer, Column::Attributes, s)?;
                serde_json::from_slice(&plain).map_err(Error::internal)
            }
        }
    }

    fn blind_with(key: &DataKey, org: Uuid, email: &str) -> Vec<u8> {
        let mut message = org.as_bytes().to_vec();
        message.extend_from_slice(email.trim().to_lowercase().as_bytes());
        hmac::sign(&key.index, &message).as_ref().to_vec()
    }

    /// The blind index of an email under the current key (case-insensitive).
    pub fn blind(&self, org: Uuid, email: &str) -> Vec<u8> {
        Self::blind_with(&self.current, org, email)
    }

    /// The blind indexes an email may be stored under: the current key's and, during a rotation, the
    /// previous key's.
    pub fn blinds(&self, org: Uuid, email: &str) -> Vec<Vec<u8>> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| Self::blind_with(k, org, email))
            .collect()
    }

    /// A value sealed for the `data_keys` table, so a node started with another key notices before
    /// serving anything.
    pub fn canary(&self) -> Result<Vec<u8>, Error> {
        self.seal(
            Uuid::nil(),
            Uuid::nil(),
            Column::Name,
            b"insights data key canary",
        )
    }

    /// Whether `canary` opens with one of these keys.
    pub fn opens_canary(&self, canary: &[u8]) -> bool {
        self.open(Uuid::nil(), Uuid::nil(), Column::Name, canary)
            .is_ok_and(|p| p == b"insights data key canary")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> FieldKeys {
        FieldKeys::new(&[7; 32], None).unwrap()
    }

    #[test]
    fn sealed_values_open_only_in_their_own_row_column_and_tenant() {
        let k = keys();
        let (org, customer) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = k.seal(org, customer, Column::Email, b"ada@example.com").unwrap();
        assert!(
            !sealed.windows(3).any(|w| w == b"ada"),
            "no plaintext in the ciphertext"
        );
        assert_eq!(
            k.open(org, customer, Column::Email, &sealed).unwrap(),
            b"ada@example.com"
        );
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            k.seal(org, customer, Column::Email, b"ada@example.com").unwrap()
        );
        assert!(
            k.open(Uuid::new_v4(), customer, Column::Email, &sealed).is_err(),
            "another tenant"
        );
        assert!(
            k.open(org, Uuid::new_v4(), Column::Email, &sealed).is_err(),
            "another row"
        );
        assert!(
            k.open(org, customer, Column::Name, &sealed).is_err(),
            "another column"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(org, customer, Column::Email, &tampered).is_err());
        assert!(k.open(org, customer, Column::Email, b"short").is_err());
    }

    #[test]
    fn a_wrong_key_fails_loudly_and_the_previous_key_still_opens() {
        let (org, customer) = (Uuid::new_v4(), Uuid::new_v4());
        let old = keys();
        let sealed = old.seal(org, customer, Column::Name, b"Ada").unwrap();
        let wrong = FieldKeys::new(&[8; 32], None).unwrap();
        let e = wrong
            .open(org, customer, Column::Name, &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not configured") || e.contains("cannot decrypt"),
            "{e}"
        );
        let rotated = FieldKeys::new(&[8; 32], Some(&[7; 32])).unwrap();
        assert_eq!(
            rotated.open(org, customer, Column::Name, &sealed).unwrap(),
            b"Ada"
        );
        // New values are sealed with the current key.
        let fresh = rotated.seal(org, customer, Column::Name, b"Ada").unwrap();
        assert_eq!(&fresh[1..5], &key_id(&[8; 32]));
        assert!(old.open(org, customer, Column::Name, &fresh).is_err());
        assert!(rotated.opens_canary(&old.canary().unwrap()));
        assert!(!wrong.opens_canary(&old.canary().unwrap()));
    }

    #[test]
    fn the_blind_index_ignores_case_and_differs_per_tenant_and_key() {
        let k = keys();
        let org = Uuid::new_v4();
        assert_eq!(k.blind(org, "Ada@Example.com"), k.blind(org, "ada@example.com"));
        assert_ne!(
            k.blind(org, "ada@example.com"),
            k.blind(Uuid::new_v4(), "ada@example.com")
        );
        let other = FieldKeys::new(&[8; 32], Some(&[7; 32])).unwrap();
        assert_eq!(
            other.blinds(org, "ada@example.com")[1],
            k.blind(org, "ada@example.com")
        );
        assert_ne!(
            other.blind(org, "ada@example.com"),
            k.blind(org, "ada@example.com")
        );
    }

    #[test]
    fn attributes_round_trip_and_empty_ones_take_no_space() {
        let k = keys();
        let (org, customer) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(k.seal_json(org, customer, &serde_json::json!({})).unwrap(), None);
        let value = serde_json::json!({"plan": "pro", "n": [1, 2.5]});
        let sealed = k.seal_json(org, customer, &value).unwrap();
        assert_eq!(k.open_json(org, customer, sealed.as_deref()).unwrap(), value);
        assert_eq!(k.open_json(org, customer, None).unwrap(), serde_json::json!({}));
    }
}
