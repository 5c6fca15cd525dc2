//! Listing cursors (R5.10): where a page ended, signed by nothing but checked against the query that
//! resumes it, so a cursor is never silently applied to another sort, order or filter.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::domain::interaction::InteractionRecord;
use crate::store::filter::InteractionFilter;
use crate::store::listing::{InteractionSort, SortKey};

/// What a listing cursor carries: where the last page ended, in which order, and for which filters.
#[derive(Debug, Serialize, Deserialize)]
struct CursorBody {
    /// Sort key and id of the last row returned.
    p: SortKey,
    /// Descending?
    d: bool,
    /// Fingerprint of the filters, so a cursor is not silently applied to another query.
    f: String,
}

fn fingerprint(filter: &InteractionFilter) -> String {
    let digest = Sha256::digest(format!("{filter:?}").as_bytes());
    hex::encode(&digest[..8])
}

/// Makes the cursor that resumes after `last`.
pub fn encode(
    filter: &InteractionFilter,
    sort: InteractionSort,
    descending: bool,
    last: &InteractionRecord,
) -> String {
    let body = CursorBody {
        p: SortKey::of(sort, last),
        d: descending,
        f: fingerprint(filter),
    };
    // Serializing plain data to JSON cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

/// Reads a cursor, checking that it was issued for this sort, order and filters.
pub fn decode(
    raw: &str,
    filter: &InteractionFilter,
    sort: InteractionSort,
    descending: bool,
) -> Result<SortKey, String> {
    let body: CursorBody = URL_SAFE_NO_PAD
        .decode(raw.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| "is not a cursor returned by this API".to_owned())?;
    if body.p.sort() != sort || body.d != descending {
        return Err(
            "was issued for another sort or order; repeat the sort and order of the first page".to_owned(),
        );
    }
    if body.f != fingerprint(filter) {
        return Err("was issued for other filters; repeat the filters of the first page".to_owned());
    }
    Ok(body.p)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::interaction::Channel;
    use crate::domain::{CustomerId, OrganizationId};

    #[test]
    fn cursors_round_trip_and_refuse_another_query() {
        let record = InteractionRecord {
            id: crate::domain::InteractionId(uuid::Uuid::from_u128(7)),
            organization_id: OrganizationId(uuid::Uuid::from_u128(1)),
            customer_id: CustomerId(uuid::Uuid::from_u128(2)),
            channel: Channel::Chat,
            event_type: "message".to_owned(),
            content: None,
            occurred_at: Utc::now(),
            metadata: "{}".to_owned(),
            enrichment: "{}".to_owned(),
            segment: None,
            idempotency_key: None,
            sentiment_positive: None,
            sentiment_negative: None,
            sentiment_neutral: None,
            sentiment_score: Some(-0.25),
            sentiment_label: None,
            sentiment_confidence: None,
            processed_at: None,
            created_at: Utc::now(),
        };
        let filter = InteractionFilter::default();
        for sort in [
            InteractionSort::Timestamp,
            InteractionSort::Sentiment,
            InteractionSort::Channel,
            InteractionSort::CreatedAt,
        ] {
            let c = encode(&filter, sort, true, &record);
            assert_eq!(
                decode(&c, &filter, sort, true).unwrap(),
                SortKey::of(sort, &record)
            );
            assert!(decode(&c, &filter, sort, false).is_err(), "another order");
        }
        let c = encode(&filter, InteractionSort::Timestamp, true, &record);
        assert!(decode(&c, &filter, InteractionSort::Sentiment, true).is_err());
        let other = InteractionFilter {
            channels: vec![Channel::Web],
            ..InteractionFilter::default()
        };
        assert!(decode(&c, &other, InteractionSort::Timestamp, true).is_err());
        assert!(decode("not-a-cursor", &filter, InteractionSort::Timestamp, true).is_err());
    }

    #[test]
    fn equal_filters_have_equal_fingerprints() {
        let a = InteractionFilter {
            channels: vec![Channel::Chat, Channel::Email],
            ..InteractionFilter::default()
        };
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&InteractionFilter::default()));
    }
}
