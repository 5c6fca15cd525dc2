//! The schema enforces integrity by itself (R10), whatever client writes to it.

use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::spawn_app;

async fn org(pool: &PgPool) -> Uuid {
    sqlx::query_scalar!("INSERT INTO organizations (name) VALUES ('S') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn customer(pool: &PgPool, org: Uuid, external: &str) -> Uuid {
    sqlx::query_scalar!(
        "INSERT INTO customers (organization_id, external_id) VALUES ($1, $2) RETURNING id",
        org,
        external
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn code(e: sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn keys_are_database_generated_uuids_with_timestamps() {
    let app = spawn_app().await;
    let o = org(&app.pool).await;
    assert_eq!(o.get_version_num(), 4);
    let row = sqlx::query!(
        "SELECT created_at, updated_at FROM organizations WHERE id = $1",
        o
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.created_at, row.updated_at);
    sqlx::query!("UPDATE organizations SET name = 'T' WHERE id = $1", o)
        .execute(&app.pool)
        .await
        .unwrap();
    let updated = sqlx::query_scalar!("SELECT updated_at FROM organizations WHERE id = $1", o)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(updated > row.updated_at, "the trigger moves updated_at");
}

#[tokio::test]
async fn foreign_keys_and_uniqueness_hold() {
    let app = spawn_app().await;
    let p = &app.pool;
    let o = org(p).await;
    // Users need an existing organization (R10.3); emails are unique (R10.2).
    let e = sqlx::query!("INSERT INTO users (organization_id, email, name, password_hash, role) VALUES ($1, 'a@b.co', 'A', 'x', 'viewer')", Uuid::new_v4())
        .execute(p)
        .await
        .unwrap_err();
    assert_eq!(code(e), "23503");
    sqlx::query!("INSERT INTO users (organization_id, email, name, password_hash, role) VALUES ($1, 'a@b.co', 'A', 'x', 'viewer')", o)
        .execute(p)
        .await
        .unwrap();
    let e = sqlx::query!("INSERT INTO users (organization_id, email, name, password_hash, role) VALUES ($1, 'a@b.co', 'B', 'x', 'viewer')", o)
        .execute(p)
        .await
        .unwrap_err();
    assert_eq!(code(e), "23505");
    let e = sqlx::query!("INSERT INTO users (organization_id, email, name, password_hash, role) VALUES ($1, 'Upper@B.co', 'B', 'x', 'viewer')", o)
        .execute(p)
        .await
        .unwrap_err();
    assert_eq!(code(e), "23514", "emails are stored normalized");

    // (organization_id, external_id) is unique (R10.6), but the same external id may exist in another org.
    customer(p, o, "c-1").await;
    let e = sqlx::query!(
        "INSERT INTO customers (organization_id, external_id) VALUES ($1, 'c-1')",
        o
    )
    .execute(p)
    .await
    .unwrap_err();
    assert_eq!(code(e), "23505");
    let other = org(p).await;
    customer(p, other, "c-1").await;
}

#[tokio::test]
async fn interactions_reference_a_customer_of_their_own_organization() {
    let app = spawn_app().await;
    let p = &app.pool;
    let a = org(p).await;
    let b = org(p).await;
    let ca = customer(p, a, "x").await;
    let insert = |o: Uuid, c: Uuid| {
        sqlx::query!(
            "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content, occurred_at)
             VALUES ($1, $2, 'chat', 'message', 'hello', now())",
            o,
            c
        )
        .execute(p)
    };
    insert(a, ca).await.unwrap();
    assert_eq!(
        code(insert(a, Uuid::new_v4()).await.unwrap_err()),
        "23503",
        "unknown customer (R10.4)"
    );
    assert_eq!(
        code(insert(b, ca).await.unwrap_err()),
        "23503",
        "a customer of another organization"
    );
    assert_eq!(
        code(insert(Uuid::new_v4(), ca).await.unwrap_err()),
        "23503",
        "unknown organization (R10.5)"
    );
}

#[tokio::test]
async fn scores_confidence_and_frequency_are_checked() {
    let app = spawn_app().await;
    let p = &app.pool;
    let o = org(p).await;
    let c = customer(p, o, "x").await;
    let pattern = |confidence: f64, frequency: i32| {
        sqlx::query!(
            "INSERT INTO behavior_patterns (organization_id, customer_id, pattern_type, confidence, frequency, description, window_start, window_end)
             VALUES ($1, $2, 'engagement', $3, $4, 'd', now() - interval '30 days', now())",
            o,
            c,
            confidence,
            frequency
        )
        .execute(p)
    };
    pattern(0.8, 3).await.unwrap();
    assert_eq!(
        code(pattern(1.2, 3).await.unwrap_err()),
        "23514",
        "confidence above 1 (R10.7)"
    );
    assert_eq!(
        code(pattern(-0.1, 3).await.unwrap_err()),
        "23514",
        "confidence below 0"
    );
    assert_eq!(
        code(pattern(0.8, 0).await.unwrap_err()),
        "23514",
        "frequency must be positive (R10.8)"
    );

    let scores = |pos: f32, neg: f32, neu: f32, conf: f32| {
        sqlx::query!(
            "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content, occurred_at,
                 sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score, sentiment_label, sentiment_confidence, processed_at)
             VALUES ($1, $2, 'email', 'message', 'fine', now(), $3, $4, $5, $3::real - $4::real, 'positive', $6, now())",
            o,
            c,
            pos,
            neg,
            neu,
            conf
        )
        .execute(p)
    };
    scores(0.7, 0.1, 0.2, 0.7).await.unwrap();
    assert_eq!(
        code(scores(0.7, 0.1, 0.1, 0.7).await.unwrap_err()),
        "23514",
        "probabilities must sum to 1"
    );
    assert_eq!(
        code(scores(0.7, 0.1, 0.2, 1.5).await.unwrap_err()),
        "23514",
        "confidence within [0, 1]"
    );
}

#[tokio::test]
async fn idempotency_keys_are_unique_per_organization() {
    let app = spawn_app().await;
    let p = &app.pool;
    let a = org(p).await;
    let b = org(p).await;
    let ca = customer(p, a, "x").await;
    let cb = customer(p, b, "x").await;
    let insert = |o: Uuid, c: Uuid| {
        sqlx::query!(
            "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, occurred_at, idempotency_key)
             VALUES ($1, $2, 'web', 'page_view', now(), 'k-1')",
            o,
            c
        )
        .execute(p)
    };
    insert(a, ca).await.unwrap();
    assert_eq!(code(insert(a, ca).await.unwrap_err()), "23505");
    insert(b, cb).await.unwrap();
}

#[tokio::test]
async fn the_expected_indexes_exist_and_lead_with_the_organization() {
    let app = spawn_app().await;
    let rows = sqlx::query!(
        r#"SELECT c.relname AS "name!", am.amname AS "method!", pg_get_indexdef(i.indexrelid) AS "def!"
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
           JOIN pg_class t ON t.oid = i.indrelid
           WHERE t.relname = 'customer_interactions'"#
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(find("customer_interactions_metadata_gin").method, "gin", "R10.11");
    let fts = find("customer_interactions_content_fts");
    assert_eq!(fts.method, "gin");
    assert!(fts.def.contains("content_tsv"), "R10.12");
    let time = find("customer_interactions_org_occurred_at_idx");
    assert_eq!(time.method, "btree", "R10.9");
    assert!(time.def.contains("(organization_id, occurred_at, id)"));
    for r in rows.iter().filter(|r| !r.name.ends_with("_pkey")) {
        let columns = r.def.split_once('(').unwrap().1;
        assert!(
            columns.starts_with("organization_id"),
            "{} does not lead with organization_id: {}",
            r.name,
            r.def
        );
    }
    // Full-text search works against the index's expression.
    let o = org(&app.pool).await;
    let c = customer(&app.pool, o, "x").await;
    sqlx::query!(
        "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content, occurred_at)
         VALUES ($1, $2, 'chat', 'message', 'The delivery was terribly late', now())",
        o,
        c
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let hits = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM customer_interactions WHERE organization_id = $1 AND content_tsv @@ plainto_tsquery('english', 'deliveries late')"#,
        o
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(hits, 1);
}
