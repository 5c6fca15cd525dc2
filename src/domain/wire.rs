//! Payloads that travel between actors, and later between nodes, encoded with postcard.
//!
//! ractor's `BytesConvertable::from_bytes` cannot fail, so a payload is wrapped in [`Wire`], which carries
//! either the value or the reason it could not be decoded; receivers answer a decode failure as an error
//! instead of panicking.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value, or why it could not be decoded.
#[derive(Debug, Clone)]
pub struct Wire<T>(pub Result<T, String>);

impl<T> Wire<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(Ok(value))
    }
}

impl<T: Serialize + DeserializeOwned> ractor::BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        match postcard::to_stdvec(&self.0) {
            Ok(bytes) => bytes,
            Err(e) => {
                let failed: Result<T, String> = Err(format!("unencodable message: {e}"));
                // Encoding a plain string cannot fail; an empty vector decodes as an error on the far side.
                postcard::to_stdvec(&failed).unwrap_or_default()
            }
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match postcard::from_bytes::<Result<T, String>>(&bytes) {
            Ok(value) => Self(value),
            Err(e) => Self(Err(format!("undecodable message: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable as _;

    use super::*;

    #[test]
    fn values_round_trip_and_garbage_becomes_an_error() {
        let w = Wire::new((String::from("x"), 42u64, uuid::Uuid::nil()));
        let back = Wire::<(String, u64, uuid::Uuid)>::from_bytes(w.into_bytes());
        assert_eq!(back.0.unwrap(), (String::from("x"), 42, uuid::Uuid::nil()));
        let garbage = Wire::<(String, u64)>::from_bytes(vec![0xff, 0xff, 0xff]);
        assert!(garbage.0.unwrap_err().contains("undecodable"));
        let empty = Wire::<u64>::from_bytes(Vec::new());
        assert!(empty.0.is_err());
    }
}
