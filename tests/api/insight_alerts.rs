//! Insight alerts end to end (issue 18): an organization with a steady week of email and chat turns
//! negative in one channel; its actor finds the drop and the spike there (not in the steady channel),
//! records each once with the filter that shows the interactions behind it, pushes it to every user of
//! the organization as a numbered `alert` event, and resolves it when the rules no longer see it.
//! The rules are the admins' to change, validated like every body.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{eventually, spawn_with};

/// Scored interactions to insert, as if the model had scored them: `per_hour` an hour in `channel` over
/// `[from, to)`, with score `score`, `negative_share` of them (spread evenly) negative.
struct Rows<'a> {
    channel: &'a str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    per_hour: i64,
    score: f64,
    negative_share: f64,
}

async fn scored_rows(pool: &sqlx::PgPool, org: uuid::Uuid, customer: uuid::Uuid, rows: Rows<'_>) {
    let Rows {
        channel,
        from,
        to,
        per_hour,
        score,
        negative_share,
    } = rows;
    let hours = ((to - from).num_seconds() as f64 / 3600.0).max(1.0 / 60.0);
    let n = ((hours * per_hour as f64).round() as i64).max(1);
    sqlx::query(
        "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content,
             occurred_at, metadata, enrichment, segment, sentiment_positive, sentiment_negative,
             sentiment_neutral, sentiment_score, sentiment_label, sentiment_confidence, model_version,
             processed_at)
         SELECT $1, $2, $3::interaction_channel, 'message', 'generated ' || i,
             $4::timestamptz + make_interval(secs => extract(epoch FROM ($5::timestamptz - $4::timestamptz)) * (i + 0.5) / $6),
             '{}'::jsonb, '{\"segment\": \"smb\"}'::jsonb, 'smb',
             CASE WHEN (i % 10) < 10 * $8 THEN 0.05 ELSE 0.8 END, CASE WHEN (i % 10) < 10 * $8 THEN 0.85 ELSE 0.05 END, 0.15 - CASE WHEN (i % 10) < 10 * $8 THEN 0.05 ELSE 0.0 END,
             CASE WHEN (i % 10) < 10 * $8 THEN least($7, -0.5) ELSE $7 END,
             (CASE WHEN (i % 10) < 10 * $8 THEN 'negative' ELSE (CASE WHEN $7 > 0.2 THEN 'positive' WHEN $7 < -0.2 THEN 'negative' ELSE 'neutral' END) END)::sentiment_label,
             0.9, 'test', now()
         FROM generate_series(0, $6 - 1) AS i",
    )
    .bind(org)
    .bind(customer)
    .bind(channel)
    .bind(from)
    .bind(to)
    .bind(n)
    .bind(score)
    .bind(negative_share)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_channel_that_turns_negative_is_alerted_once_pushed_to_its_users_and_resolved() {
    let app = spawn_with(|c| c.ingest.insight_eval_interval = Duration::from_millis(200)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = Some(admin.access.as_str());
    let (_, viewer) = app.user_with_role(&admin, insights::domain::Role::Viewer).await;
    let customer = app.customer(&admin.access, "steady", Some("smb")).await["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let now = chrono::Utc::now();
    let hour_start =
        chrono::DurationRound::duration_trunc(now - chrono::Duration::hours(1), chrono::Duration::hours(1))
            .unwrap();
    // A steady week before the window: positive, one in ten negative, 30 an hour in each channel.
    for channel in ["email", "chat"] {
        scored_rows(
            &app.pool,
            org.id.as_uuid(),
            customer,
            Rows {
                channel,
                from: hour_start - chrono::Duration::days(8),
                to: hour_start,
                per_hour: 30,
                score: 0.5,
                negative_share: 0.1,
            },
        )
        .await;
        // The window so far: chat as usual.
        if channel == "chat" {
            scored_rows(
                &app.pool,
                org.id.as_uuid(),
                customer,
                Rows {
                    channel,
                    from: hour_start,
                    to: now,
                    per_hour: 30,
                    score: 0.5,
                    negative_share: 0.1,
                },
            )
            .await;
        }
    }
    // Email turns: 60 an hour since the window began, all negative.
    scored_rows(
        &app.pool,
        org.id.as_uuid(),
        customer,
        Rows {
            channel: "email",
            from: hour_start,
            to: now,
            per_hour: 60,
            score: -0.7,
            negative_share: 1.0,
        },
    )
    .await;
    insights::store::rollups::fold_all(&app.pool, 100_000)
        .await
        .unwrap();
    // The organization's actor (which evaluates its data) runs once the organization is in use.
    app.post(
        "/api/v1/interactions",
        token,
        crate::helpers::interaction(&customer.to_string(), "web", None),
    )
    .await
    .expect(201);

    // The rules: admins only, validated field by field.
    app.get("/api/v1/alert-rules", Some(&viewer.access))
        .await
        .expect_error(403, "forbidden");
    let rules = app.get("/api/v1/alert-rules", token).await;
    assert_eq!(rules.expect(200)["sensitivity"], 3.0);
    assert_eq!(rules.body["minVolume"], 20);
    let bad = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/alert-rules",
            token,
            Some(json!({"windowMinutes": 5, "sensitivity": "high", "channels": 1})),
        )
        .await;
    let fields: Vec<String> = bad.expect_error(400, "validation_failed")["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["windowMinutes", "sensitivity", "channels"]);

    let events = || async {
        app.events_after(org.id, 0)
            .await
            .events
            .into_iter()
            .filter(|e| e.kind == "alert")
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
            .collect::<Vec<Value>>()
    };
    let firing = |alerts: &Value| -> Vec<(String, String)> {
        alerts["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["rule"].as_str().unwrap().to_owned(),
                    a["details"]["dimension"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let found = eventually(Duration::from_secs(10), || async {
        let r = app.get("/api/v1/alerts?kind=insight&state=firing", token).await;
        let f = firing(&r.body);
        f.contains(&("sentiment_drop".into(), "channel:email".into()))
            && f.contains(&("negative_spike".into(), "channel:email".into()))
    })
    .await;
    let listed = app.get("/api/v1/alerts?kind=insight&state=firing", token).await;
    assert!(
        found,
        "the email channel's drop and spike are alerted: {}",
        listed.body
    );
    let f = firing(&listed.body);
    assert!(
        !f.iter().any(|(_, d)| d == "channel:chat"),
        "the steady channel raises nothing: {f:?}"
    );
    // Several evaluations later, one row per condition.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT fingerprint FROM alerts GROUP BY fingerprint HAVING count(*) > 1) d",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
    let drop = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "sentiment_drop" && a["details"]["dimension"] == "channel:email")
        .cloned()
        .unwrap();
    assert_eq!(drop["kind"], "insight");
    assert_eq!(drop["organizationId"], org.id.to_string());
    assert!(drop["details"]["drop"].as_f64().unwrap() > 1.0, "{drop}");
    assert!(drop["details"]["baseline"].as_f64().unwrap() > 0.3, "{drop}");
    // The filter of the alert lists the interactions behind it.
    let filter = &drop["details"]["filter"];
    assert_eq!(filter["channels"], "email");
    let listing = app
        .get(
            &format!(
                "/api/v1/interactions?channels=email&from={}&to={}&pageSize=1",
                filter["from"].as_str().unwrap().replace('+', "%2B"),
                filter["to"].as_str().unwrap().replace('+', "%2B")
            ),
            token,
        )
        .await;
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_interactions WHERE channel = 'email'
          AND occurred_at >= $1::timestamptz AND occurred_at < $2::timestamptz",
    )
    .bind(filter["from"].as_str().unwrap())
    .bind(filter["to"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(behind >= 60, "{behind} negative emails in the window");
    assert_eq!(
        listing.expect(200)["pagination"]["total"],
        behind,
        "{}",
        listing.body
    );
    // Every user of the organization gets it as a numbered event, and viewers may list nothing.
    let published = events().await;
    assert!(
        published
            .iter()
            .any(|a| a["rule"] == "sentiment_drop" && a["state"] == "firing"),
        "{published:?}"
    );

    // The email channel recovers: many content customers write in the same window, the average is
    // back within 0.3 of the baseline and the share of negatives too. The email alerts resolve by
    // themselves, and the end is published.
    scored_rows(
        &app.pool,
        org.id.as_uuid(),
        customer,
        Rows {
            channel: "email",
            from: hour_start,
            to: now,
            per_hour: 400,
            score: 0.6,
            negative_share: 0.0,
        },
    )
    .await;
    insights::store::rollups::fold_all(&app.pool, 100_000)
        .await
        .unwrap();
    let recovered = eventually(Duration::from_secs(10), || async {
        let r = app.get("/api/v1/alerts?kind=insight&state=firing", token).await;
        !firing(&r.body).iter().any(|(_, d)| d == "channel:email")
    })
    .await;
    assert!(recovered, "the email channel's alerts resolved when it recovered");
    let published = events().await;
    assert!(
        published.iter().any(|a| a["rule"] == "sentiment_drop"
            && a["details"]["dimension"] == "channel:email"
            && a["state"] == "resolved"),
        "{published:?}"
    );
    let resolved = app.get("/api/v1/alerts?kind=insight&state=resolved", token).await;
    assert!(
        firing(&resolved.body).contains(&("sentiment_drop".into(), "channel:email".into())),
        "{}",
        resolved.body
    );

    // Admins can switch dimensions off: whatever still fires (the organization as a whole, the
    // segment) resolves too.
    app.call(
        reqwest::Method::PUT,
        "/api/v1/alert-rules",
        token,
        Some(json!({"channels": false, "segments": false, "overall": false})),
    )
    .await
    .expect(200);
    let quiet = eventually(Duration::from_secs(10), || async {
        let r = app.get("/api/v1/alerts?kind=insight&state=firing", token).await;
        r.body["data"].as_array().is_some_and(|d| d.is_empty())
    })
    .await;
    assert!(quiet, "nothing fires with every dimension off");
    let count = app.metric("insights_insight_evaluation_seconds_count").await;
    let sum = app.metric("insights_insight_evaluation_seconds_sum").await;
    eprintln!(
        "insight evaluation: {count} runs, {:.2} ms each on average",
        sum / count * 1000.0
    );
    assert!(count >= 3.0);
}
