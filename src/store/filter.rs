//! The filters every interaction query accepts (R5.1–5.4): listings, summaries and exports.

use chrono::{DateTime, Utc};

use crate::domain::interaction::Channel;
use crate::domain::{CustomerId, OrganizationId};

/// The filters shared by listings, summaries and exports (R5.1–5.4). Channels and segments are kept
/// sorted and unique, so equal filters compare (and hash into cache keys) equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub channels: Vec<Channel>,
    pub sentiment_min: Option<f32>,
    pub sentiment_max: Option<f32>,
    pub segments: Vec<String>,
    pub customer: Option<CustomerId>,
    pub text: Option<String>,
}

/// Adds `WHERE organization_id = … AND <filters>` with every value bound.
pub(crate) fn push_interaction_filters(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    org: OrganizationId,
    q: &InteractionFilter,
) {
    push_interaction_filters_matching(qb, org, q, TextMatch::Index);
}

/// How a full-text filter is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMatch {
    /// `content_tsv @@ query`: the GIN index finds the matches (best when they are few).
    Index,
    /// `ts_match_vq(content_tsv, query)`, the same test as a function the GIN index cannot serve: the
    /// rows are read in the order of another index and tested one by one, which finds a page of a
    /// frequent term after a few dozen rows instead of collecting all its matches first.
    Scan,
}

/// [`push_interaction_filters`] with the full-text test chosen.
pub(crate) fn push_interaction_filters_matching(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    org: OrganizationId,
    q: &InteractionFilter,
    text_match: TextMatch,
) {
    qb.push(" WHERE organization_id = ").push_bind(org.as_uuid());
    if let Some(from) = q.from {
        qb.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        qb.push(" AND occurred_at < ").push_bind(to);
    }
    // One value is an equality, not `= ANY(array)`: PostgreSQL then reads the channel index in order
    // (a sort by channel, or by time within one channel) instead of filtering the whole index.
    match q.channels.as_slice() {
        [] => {}
        [one] => {
            qb.push(" AND channel = ")
                .push_bind(one.as_str())
                .push("::interaction_channel");
        }
        many => {
            let names: Vec<String> = many.iter().map(|c| c.as_str().to_owned()).collect();
            qb.push(" AND channel = ANY(")
                .push_bind(names)
                .push("::text[]::interaction_channel[])");
        }
    }
    if let Some(min) = q.sentiment_min {
        qb.push(" AND sentiment_score >= ").push_bind(min);
    }
    if let Some(max) = q.sentiment_max {
        qb.push(" AND sentiment_score <= ").push_bind(max);
    }
    match q.segments.as_slice() {
        [] => {}
        [one] => {
            qb.push(" AND segment = ").push_bind(one.clone());
        }
        many => {
            qb.push(" AND segment = ANY(")
                .push_bind(many.to_vec())
                .push("::text[])");
        }
    }
    if let Some(customer) = q.customer {
        qb.push(" AND customer_id = ").push_bind(customer.as_uuid());
    }
    if let Some(text) = &q.text {
        qb.push(match text_match {
            TextMatch::Index => " AND content_tsv @@ plainto_tsquery('english', ",
            TextMatch::Scan => " AND ts_match_vq(content_tsv, plainto_tsquery('english', ",
        })
        .push_bind(text.clone())
        .push(match text_match {
            TextMatch::Index => ")",
            TextMatch::Scan => "))",
        });
    }
}
