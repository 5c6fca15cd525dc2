//! The data keys customers' fields are sealed with (R9.9), kept apart from the values: which keys are
//! in use (`data_keys`, with a canary each), the encryption of rows written before sealing existed, and
//! the re-encryption of a rotation.

use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use super::fields::{Column, FieldKeys};
use crate::error::Error;

/// Checks that these keys open everything sealed so far, then records the current one. A key in use
/// that is not configured (a wrong `INSIGHTS_DATA_KEY`, or a rotation whose previous key was dropped too
/// early) refuses the start, naming the key id, rather than failing on every read.
pub async fn check(pool: &PgPool, keys: &FieldKeys) -> Result<(), Error> {
    let rows = sqlx::query("SELECT id, canary FROM data_keys WHERE retired_at IS NULL")
        .fetch_all(pool)
        .await?;
    for row in rows {
        let id: Vec<u8> = row.try_get(0)?;
        let canary: Vec<u8> = row.try_get(1)?;
        if !keys.ids().iter().any(|k| k[..] == id[..]) || !keys.opens_canary(&canary) {
            return Err(Error::internal(anyhow::anyhow!(
                "customer data is sealed with data key {}, which is neither INSIGHTS_DATA_KEY ({}) nor \
                 INSIGHTS_DATA_KEY_PREVIOUS: set the key it was sealed with (as the previous key during a \
                 rotation) or nothing can be read",
                hex::encode(&id),
                hex::encode(keys.current_id())
            )));
        }
    }
    sqlx::query(
        "INSERT INTO data_keys (id, canary) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET retired_at = NULL",
    )
    .bind(keys.current_id().to_vec())
    .bind(keys.canary()?)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seals a customer's fields with the current key, with its email's blind index, and clears any
/// plaintext left from before sealing.
async fn seal_row(
    tx: &mut sqlx::PgConnection,
    keys: &FieldKeys,
    org: Uuid,
    id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
    attributes: &serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE customers SET name_sealed = $2, email_sealed = $3, email_index = $4, attributes_sealed = $5, \
         name = NULL, email = NULL, attributes = '{}'::jsonb WHERE id = $1",
    )
    .bind(id)
    .bind(keys.seal_text(org, id, Column::Name, name)?)
    .bind(keys.seal_text(org, id, Column::Email, email)?)
    .bind(email.map(|e| keys.blind(org, e)))
    .bind(keys.seal_json(org, id, attributes)?)
    .execute(tx)
    .await?;
    Ok(())
}

/// Seals the rows written before sealing existed (plaintext name, email or attributes), `batch` at a
/// time, each batch in its own transaction, and clears their plaintext; returns how many. Forward-only
/// and resumable: a row is either still plaintext or sealed.
pub async fn seal_plaintext(pool: &PgPool, keys: &FieldKeys, batch: i64) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, organization_id, name, email, attributes FROM customers \
             WHERE name IS NOT NULL OR email IS NOT NULL OR attributes <> '{}'::jsonb \
             LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(total);
        }
        for row in &rows {
            let id: Uuid = row.try_get(0)?;
            let org: Uuid = row.try_get(1)?;
            let name: Option<String> = row.try_get(2)?;
            let email: Option<String> = row.try_get(3)?;
            let attributes: serde_json::Value = row.try_get(4)?;
            seal_row(
                &mut tx,
                keys,
                org,
                id,
                name.as_deref(),
                email.as_deref(),
                &attributes,
            )
            .await?;
        }
        tx.commit().await?;
        total += rows.len() as u64;
        tracing::info!(sealed = total, "customer fields encrypted at rest");
    }
}

/// Re-seals, `batch` rows at a time, every value sealed with another key than the current one (the
/// previous key must be configured to open them), with its blind index; `progress` hears how many are
/// done and how many were left at the start. Resumable: a run stopped halfway leaves each row under one
/// key or the other, and the next run continues. At the end the other keys are retired.
pub async fn rotate(
    pool: &PgPool,
    keys: &FieldKeys,
    batch: i64,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, Error> {
    let current = keys.current_id().to_vec();
    const STALE: &str = "(name_sealed IS NOT NULL AND substring(name_sealed FROM 2 FOR 4) <> $1) \
         OR (email_sealed IS NOT NULL AND substring(email_sealed FROM 2 FOR 4) <> $1) \
         OR (attributes_sealed IS NOT NULL AND substring(attributes_sealed FROM 2 FOR 4) <> $1)";
    let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM customers WHERE {STALE}"
    )))
    .bind(&current)
    .fetch_one(pool)
    .await?;
    let mut done = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, organization_id, name_sealed, email_sealed, attributes_sealed FROM customers \
             WHERE {STALE} LIMIT $2 FOR UPDATE SKIP LOCKED"
        )))
        .bind(&current)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let id: Uuid = row.try_get(0)?;
            let org: Uuid = row.try_get(1)?;
            let name = keys.open_text(
                org,
                id,
                Column::Name,
                row.try_get::<Option<Vec<u8>>, _>(2)?.as_deref(),
            )?;
            let email = keys.open_text(
                org,
                id,
                Column::Email,
                row.try_get::<Option<Vec<u8>>, _>(3)?.as_deref(),
            )?;
            let attributes = keys.open_json(org, id, row.try_get::<Option<Vec<u8>>, _>(4)?.as_deref())?;
            seal_row(
                &mut tx,
                keys,
                org,
                id,
                name.as_deref(),
                email.as_deref(),
                &attributes,
            )
            .await?;
        }
        tx.commit().await?;
        done += rows.len() as u64;
        progress(done, left.max(0) as u64);
    }
    sqlx::query("UPDATE data_keys SET retired_at = now() WHERE id <> $1 AND retired_at IS NULL")
        .bind(&current)
        .execute(pool)
        .await?;
    Ok(done)
}
