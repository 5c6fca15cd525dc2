//! Customers of an organization.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::fields::{Column, FieldKeys};
use super::org_tx::OrgTx;
use crate::domain::customer::{CustomerState, CustomerView, ExternalId, PatternView, Segment};
use crate::domain::{CustomerId, OrganizationId};
use crate::error::{Error, unique_violation};

/// A customer row as stored: name, email and attributes sealed (`store::fields`).
#[derive(sqlx::FromRow)]
struct StoredRow {
    id: CustomerId,
    external_id: String,
    name_sealed: Option<Vec<u8>>,
    email_sealed: Option<Vec<u8>>,
    segment: Option<String>,
    attributes_sealed: Option<Vec<u8>>,
    interaction_count: i64,
    average_sentiment: Option<f64>,
    last_seen_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns of a [`StoredRow`].
const STORED: &str = "id, external_id, name_sealed, email_sealed, segment, attributes_sealed, \
     interaction_count, average_sentiment, last_seen_at, created_at, updated_at";

impl StoredRow {
    fn open(self, keys: &FieldKeys, org: OrganizationId) -> Result<CustomerRow, Error> {
        let (o, c) = (org.as_uuid(), self.id.as_uuid());
        Ok(CustomerRow {
            id: self.id,
            external_id: self.external_id,
            name: keys.open_text(o, c, Column::Name, self.name_sealed.as_deref())?,
            email: keys.open_text(o, c, Column::Email, self.email_sealed.as_deref())?,
            segment: self.segment,
            attributes: keys.open_json(o, c, self.attributes_sealed.as_deref())?,
            interaction_count: self.interaction_count,
            average_sentiment: self.average_sentiment,
            last_seen_at: self.last_seen_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A customer row, as read for the API.
#[derive(Debug)]
pub struct CustomerRow {
    pub id: CustomerId,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub segment: Option<String>,
    pub attributes: serde_json::Value,
    pub interaction_count: i64,
    pub average_sentiment: Option<f64>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CustomerRow {
    /// Turns the row into its API view.
    pub fn into_view(self, patterns: Option<Vec<PatternView>>) -> CustomerView {
        CustomerView {
            id: self.id,
            external_id: self.external_id,
            name: self.name,
            email: self.email,
            segment: self.segment,
            attributes: self.attributes,
            interaction_count: self.interaction_count,
            average_sentiment: self.average_sentiment,
            last_seen_at: self.last_seen_at,
            patterns,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A customer to create.
#[derive(Debug)]
pub struct NewCustomer {
    pub external_id: ExternalId,
    pub name: Option<String>,
    pub email: Option<String>,
    pub segment: Option<Segment>,
    pub attributes: serde_json::Value,
}

/// Changes to a customer: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct CustomerPatch {
    pub external_id: Option<ExternalId>,
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub segment: Option<Option<Segment>>,
    pub attributes: Option<serde_json::Value>,
}

/// Filters, sort and page of a customer listing.
#[derive(Debug, Clone)]
pub struct CustomerQuery {
    pub segment: Option<String>,
    pub q: Option<String>,
    pub sort: CustomerSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

/// The columns a listing can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerSort {
    CreatedAt,
    LastSeenAt,
    InteractionCount,
    ExternalId,
}

impl CustomerSort {
    /// Every sort key, in API order (the first is the default). Names are sealed (R9.9), so PostgreSQL
    /// cannot order by them: `name` is refused with the others listed.
    pub const ALL: [CustomerSort; 4] = [
        Self::CreatedAt,
        Self::LastSeenAt,
        Self::InteractionCount,
        Self::ExternalId,
    ];

    /// Parses the API name of a sort key.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            let why = if s == "name" {
                " (names are encrypted at rest, so they cannot be sorted by)"
            } else {
                ""
            };
            format!("must be one of {}{why}", names.join(", "))
        })
    }

    /// Returns the API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::LastSeenAt => "lastSeenAt",
            Self::InteractionCount => "interactionCount",
            Self::ExternalId => "externalId",
        }
    }

    /// The SQL column; a fixed identifier from this enum, never user text.
    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::LastSeenAt => "last_seen_at",
            Self::InteractionCount => "interaction_count",
            Self::ExternalId => "external_id",
        }
    }
}

fn conflict(e: sqlx::Error) -> Error {
    if unique_violation(&e).as_deref() == Some("customers_org_external_id_key") {
        return Error::Conflict("a customer with this externalId already exists".to_owned());
    }
    e.into()
}

/// Creates a customer, its sensitive fields sealed; a duplicate external id in the organization is a 409.
pub async fn create(tx: &mut OrgTx, keys: &FieldKeys, c: &NewCustomer) -> Result<CustomerRow, Error> {
    let org = tx.org();
    // The id is chosen here: it is bound into the sealed values.
    let id = uuid::Uuid::new_v4();
    let (o, cid) = (org.as_uuid(), id);
    let row: StoredRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customers (id, organization_id, external_id, name_sealed, email_sealed, email_index, segment, \
         attributes_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {STORED}"
    )))
    .bind(id)
    .bind(o)
    .bind(c.external_id.as_str())
    .bind(keys.seal_text(o, cid, Column::Name, c.name.as_deref())?)
    .bind(keys.seal_text(o, cid, Column::Email, c.email.as_deref())?)
    .bind(c.email.as_deref().map(|e| keys.blind(o, e)))
    .bind(c.segment.as_ref().map(Segment::as_str))
    .bind(keys.seal_json(o, cid, &c.attributes)?)
    .fetch_one(&mut **tx)
    .await
    .map_err(conflict)?;
    row.open(keys, org)
}

/// Creates a customer known only by its external id (nothing to seal); a duplicate is a 409.
pub async fn create_bare(tx: &mut OrgTx, external_id: &ExternalId) -> Result<CustomerId, Error> {
    let org = tx.org();
    sqlx::query_scalar("INSERT INTO customers (organization_id, external_id) VALUES ($1, $2) RETURNING id")
        .bind(org.as_uuid())
        .bind(external_id.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(conflict)
}

/// Returns a customer of this organization.
pub async fn get(
    pool: &PgPool,
    keys: &FieldKeys,
    org: OrganizationId,
    id: CustomerId,
) -> Result<Option<CustomerRow>, Error> {
    let row: Option<StoredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STORED} FROM customers WHERE organization_id = $1 AND id = $2"
    )))
    .bind(org.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.map(|r| r.open(keys, org)).transpose()
}

/// Finds a customer by external id.
pub async fn id_by_external_id(
    pool: &PgPool,
    org: OrganizationId,
    external: &str,
) -> Result<Option<CustomerId>, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: CustomerId" FROM customers WHERE organization_id = $1 AND external_id = $2"#,
        org.as_uuid(),
        external
    )
    .fetch_optional(pool)
    .await?)
}

/// Reads what a customer actor keeps in memory.
pub async fn load_state(
    conn: impl sqlx::PgExecutor<'_>,
    org: OrganizationId,
    id: CustomerId,
) -> Result<Option<CustomerState>, Error> {
    Ok(sqlx::query_as!(
        CustomerState,
        r#"SELECT id AS "id: CustomerId", segment, interaction_count, average_sentiment, last_seen_at
           FROM customers WHERE organization_id = $1 AND id = $2"#,
        org.as_uuid(),
        id.as_uuid()
    )
    .fetch_optional(conn)
    .await?)
}

/// Returns the customer's current patterns, highest confidence first.
pub async fn patterns(pool: &PgPool, org: OrganizationId, id: CustomerId) -> Result<Vec<PatternView>, Error> {
    Ok(sqlx::query_as!(
        PatternView,
        r#"SELECT pattern_type, confidence, frequency, description, evidence, window_start, window_end, detected_at
           FROM behavior_patterns WHERE organization_id = $1 AND customer_id = $2
           ORDER BY confidence DESC, pattern_type"#,
        org.as_uuid(),
        id.as_uuid()
    )
    .fetch_all(pool)
    .await?)
}

/// What a customer's stored patterns are, as a customer actor compares detections: type, frequency
/// and confidence in hundredths.
pub async fn pattern_signature(
    pool: &PgPool,
    org: OrganizationId,
    id: CustomerId,
) -> Result<Vec<(crate::domain::pattern::PatternType, i32, i64)>, Error> {
    let rows: Vec<(String, i32, f64)> = sqlx::query_as(
        "SELECT pattern_type, frequency, confidence FROM behavior_patterns
          WHERE organization_id = $1 AND customer_id = $2",
    )
    .bind(org.as_uuid())
    .bind(id.as_uuid())
    .fetch_all(pool)
    .await?;
    let mut signature: Vec<_> = rows
        .into_iter()
        .filter_map(|(kind, frequency, confidence)| {
            let kind = crate::domain::pattern::PatternType::parse(&kind).ok()?;
            Some((kind, frequency, (confidence * 100.0).round() as i64))
        })
        .collect();
    signature.sort();
    Ok(signature)
}

/// Customers of the organization whose stored patterns were detected before `before`, at most `limit`.
pub async fn stale_pattern_customers(
    pool: &PgPool,
    org: OrganizationId,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CustomerId>, Error> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT customer_id FROM behavior_patterns
          WHERE organization_id = $1 AND detected_at < $2
          GROUP BY customer_id ORDER BY min(detected_at) LIMIT $3",
    )
    .bind(org.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(CustomerId::from).collect())
}

/// Marks a customer's stored patterns as detected again now, over this window (a re-evaluation that
/// found the same set).
pub async fn touch_patterns(
    tx: &mut OrgTx,
    id: CustomerId,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
) -> Result<(), Error> {
    let org = tx.org();
    let tx: &mut sqlx::PgConnection = tx;
    sqlx::query(
        "UPDATE behavior_patterns SET detected_at = now(), window_start = $3, window_end = $4
          WHERE organization_id = $1 AND customer_id = $2",
    )
    .bind(org.as_uuid())
    .bind(id.as_uuid())
    .bind(window_start)
    .bind(window_end)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn push_filters(
    qb: &mut QueryBuilder<Postgres>,
    keys: &FieldKeys,
    org: OrganizationId,
    query: &CustomerQuery,
) {
    qb.push(" WHERE organization_id = ").push_bind(org.as_uuid());
    if let Some(segment) = &query.segment {
        qb.push(" AND segment = ").push_bind(segment.clone());
    }
    if let Some(q) = &query.q {
        // A substring of the external id (% and _ in the text match literally), or exactly the email
        // (through its blind index: emails are sealed, R9.9).
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        qb.push(" AND (external_id ILIKE ")
            .push_bind(pattern)
            .push(" OR email_index = ANY(")
            .push_bind(keys.blinds(org.as_uuid(), q))
            .push("))");
    }
}

/// Lists customers with filters, sort and paging, and counts all matches.
pub async fn list(
    pool: &PgPool,
    keys: &FieldKeys,
    org: OrganizationId,
    query: &CustomerQuery,
) -> Result<(Vec<CustomerRow>, i64), Error> {
    let mut qb = QueryBuilder::new(format!("SELECT {STORED} FROM customers"));
    push_filters(&mut qb, keys, org, query);
    let direction = if query.descending { "DESC" } else { "ASC" };
    let nulls = if query.descending {
        "NULLS LAST"
    } else {
        "NULLS FIRST"
    };
    // The id breaks ties, so identical queries return identical pages (R5.10).
    qb.push(format!(
        " ORDER BY {} {direction} {nulls}, id {direction}",
        query.sort.column()
    ));
    qb.push(" LIMIT ")
        .push_bind(query.limit)
        .push(" OFFSET ")
        .push_bind(query.offset);
    let rows = qb.build_query_as::<StoredRow>().fetch_all(pool).await?;
    let rows = rows
        .into_iter()
        .map(|r| r.open(keys, org))
        .collect::<Result<Vec<_>, _>>()?;

    let mut count = QueryBuilder::new("SELECT count(*) FROM customers");
    push_filters(&mut count, keys, org, query);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    Ok((rows, total))
}

/// Applies a patch; returns `None` when the customer is not this organization's.
pub async fn update(
    tx: &mut OrgTx,
    keys: &FieldKeys,
    id: CustomerId,
    patch: &CustomerPatch,
) -> Result<Option<CustomerRow>, Error> {
    let org = tx.org();
    let (o, c) = (org.as_uuid(), id.as_uuid());
    let segment = patch
        .segment
        .as_ref()
        .map(|s| s.as_ref().map(|s| s.as_str().to_owned()));
    let name = patch
        .name
        .as_ref()
        .map(|n| keys.seal_text(o, c, Column::Name, n.as_deref()))
        .transpose()?;
    let email = patch
        .email
        .as_ref()
        .map(|e| keys.seal_text(o, c, Column::Email, e.as_deref()))
        .transpose()?;
    let email_index = patch
        .email
        .as_ref()
        .map(|e| e.as_deref().map(|e| keys.blind(o, e)));
    let attributes = patch
        .attributes
        .as_ref()
        .map(|a| keys.seal_json(o, c, a))
        .transpose()?;
    let row: Option<StoredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE customers SET
             external_id = COALESCE($3, external_id),
             name_sealed = CASE WHEN $4 THEN $5 ELSE name_sealed END,
             email_sealed = CASE WHEN $6 THEN $7 ELSE email_sealed END,
             email_index = CASE WHEN $6 THEN $8 ELSE email_index END,
             segment = CASE WHEN $9 THEN $10 ELSE segment END,
             attributes_sealed = CASE WHEN $11 THEN $12 ELSE attributes_sealed END
         WHERE organization_id = $1 AND id = $2
         RETURNING {STORED}"
    )))
    .bind(o)
    .bind(c)
    .bind(patch.external_id.as_ref().map(ExternalId::as_str))
    .bind(name.is_some())
    .bind(name.flatten())
    .bind(email.is_some())
    .bind(email.flatten())
    .bind(email_index.flatten())
    .bind(segment.is_some())
    .bind(segment.flatten())
    .bind(attributes.is_some())
    .bind(attributes.flatten())
    .fetch_optional(&mut **tx)
    .await
    .map_err(conflict)?;
    row.map(|r| r.open(keys, org)).transpose()
}

/// Returns the customer's interactions of the pattern window, newest first, at most `cap` of them.
pub async fn recent_events(
    conn: impl sqlx::PgExecutor<'_>,
    org: OrganizationId,
    id: CustomerId,
    since: DateTime<Utc>,
    cap: i64,
) -> Result<Vec<(crate::domain::InteractionId, crate::domain::pattern::Event)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id: crate::domain::InteractionId", occurred_at, channel AS "channel: crate::domain::interaction::Channel",
                  sentiment_score
           FROM customer_interactions
           WHERE organization_id = $1 AND customer_id = $2 AND occurred_at >= $3
           ORDER BY occurred_at DESC, id DESC LIMIT $4"#,
        org.as_uuid(),
        id.as_uuid(),
        since,
        cap
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.id,
                crate::domain::pattern::Event {
                    at: r.occurred_at,
                    channel: r.channel,
                    score: r.sentiment_score,
                },
            )
        })
        .collect())
}

/// Replaces the customer's stored patterns with `patterns`, inside `tx` (R4.10, R10.7–10.8).
pub async fn replace_patterns(
    tx: &mut OrgTx,
    id: CustomerId,
    patterns: &[crate::domain::pattern::Pattern],
) -> Result<(), Error> {
    let org = tx.org();
    let tx: &mut sqlx::PgConnection = tx;
    sqlx::query!(
        "DELETE FROM behavior_patterns WHERE organization_id = $1 AND customer_id = $2",
        org.as_uuid(),
        id.as_uuid()
    )
    .execute(&mut *tx)
    .await?;
    for p in patterns {
        sqlx::query!(
            "INSERT INTO behavior_patterns (organization_id, customer_id, pattern_type, confidence, frequency, description,
                 evidence, window_start, window_end)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)",
            org.as_uuid(),
            id.as_uuid(),
            p.kind.as_str(),
            p.confidence,
            p.frequency,
            p.description,
            p.evidence,
            p.window_start,
            p.window_end
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
