//! Dashboard and trends with known answers, their caching and invalidation, and the export.

use insights::domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, eventually, redis_url, spawn_app, spawn_with};
use crate::listing::dataset;

const RANGE: &str = "from=2026-01-01T00:00:00Z&to=2026-01-07T00:00:00Z";

fn cache_of(r: &Reply) -> &str {
    r.headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-4)
}

#[tokio::test]
async fn the_dashboard_summarizes_the_known_dataset() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, _) = dataset(&app, &admin.access).await;
    let r = app
        .get(
            &format!("/api/v1/insights/dashboard?{RANGE}"),
            Some(&admin.access),
        )
        .await;
    let d = r.expect(200).clone();
    let t = &d["totals"];
    assert_eq!(
        (&t["interactions"], &t["customers"], &t["scored"], &t["unscored"]),
        (&json!(6), &json!(2), &json!(4), &json!(2))
    );
    assert!(close(&t["averageSentiment"], 0.2), "{t}");
    assert!(close(&t["negativeShare"], 0.25), "{t}");
    assert_eq!(d["interval"], "day", "six days are shown by day");
    let channels: Vec<(String, i64)> = d["byChannel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                c["interactions"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        channels,
        [("web", 1), ("mobile", 1), ("email", 1), ("chat", 2), ("phone", 1)].map(|(c, n)| (c.to_owned(), n))
    );
    let chat = &d["byChannel"][3];
    assert!(close(&chat["averageSentiment"], 0.05), "{chat}");
    assert_eq!(chat["negative"], 1);
    assert!(d["byChannel"][0]["averageSentiment"].is_null(), "web is unscored");
    let s = &d["sentiment"];
    assert_eq!(
        (&s["positive"], &s["negative"], &s["neutral"], &s["unscored"]),
        (&json!(2), &json!(1), &json!(1), &json!(2))
    );
    let histogram = s["histogram"].as_array().unwrap();
    assert_eq!(histogram.len(), 10);
    assert_eq!(
        histogram
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum::<i64>(),
        4
    );
    assert_eq!(
        (histogram[5]["from"].clone(), histogram[5]["count"].clone()),
        (json!(0.0), json!(1))
    );
    assert_eq!(histogram[8]["count"], 1, "0.7 in [0.6, 0.8)");
    assert_eq!(histogram[9]["count"], 1, "0.9 in [0.8, 1.0]");
    let volume: Vec<i64> = d["volume"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["interactions"].as_i64().unwrap())
        .collect();
    assert_eq!(volume, [1, 1, 1, 1, 1, 1]);
    assert_eq!(d["volume"][0]["bucket"], "2026-01-01T00:00:00Z");
    assert!(close(&d["volume"][0]["averageSentiment"], -0.8));
    let top = d["topNegativeCustomers"].as_array().unwrap();
    assert_eq!(top.len(), 1, "only smb averages below zero: {top:?}");
    assert_eq!(top[0]["customerId"], smb.as_str());
    assert_eq!(
        (&top[0]["interactions"], &top[0]["negative"]),
        (&json!(3), &json!(1))
    );
    assert!(close(&top[0]["averageSentiment"], -0.05));

    // Filters apply to every part.
    let d = app
        .get(
            &format!("/api/v1/insights/dashboard?{RANGE}&segments=enterprise&interval=hour"),
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(d["totals"]["interactions"], 3);
    assert_eq!(d["interval"], "hour");
    assert_eq!(d["volume"].as_array().unwrap().len(), 6 * 24);
    assert!(d["topNegativeCustomers"].as_array().unwrap().is_empty());

    // Another organization sees none of it.
    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    let d = app
        .get(
            &format!("/api/v1/insights/dashboard?{RANGE}"),
            Some(&other_admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(d["totals"]["interactions"], 0);
    assert!(d["totals"]["averageSentiment"].is_null());
    assert!(
        d["byChannel"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["interactions"] == 0)
    );
}

#[tokio::test]
async fn trends_count_by_hour_day_and_week_with_filters() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    dataset(&app, &admin.access).await;
    let get = |q: String| {
        let app = &app;
        let token = admin.access.clone();
        async move {
            app.get(&format!("/api/v1/insights/trends?{q}"), Some(&token))
                .await
        }
    };
    let counts = |body: &Value| -> Vec<i64> {
        body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["interactions"].as_i64().unwrap())
            .collect()
    };
    let day = get(format!("{RANGE}&channels=chat")).await.expect(200).clone();
    assert_eq!(day["interval"], "day", "day is the default");
    assert_eq!(counts(&day), [1, 0, 0, 1, 0, 0]);
    assert!(close(&day["points"][0]["averageSentiment"], -0.8));
    assert_eq!(day["points"][0]["negative"], 1);
    assert!(
        day["points"][1]["averageSentiment"].is_null(),
        "empty buckets are kept"
    );
    // 2026-01-01 is a Thursday: weeks start on Monday 2025-12-29 and 2026-01-05.
    let week = get(format!("{RANGE}&interval=week")).await.expect(200).clone();
    assert_eq!(counts(&week), [4, 2]);
    assert_eq!(week["points"][0]["bucket"], "2025-12-29T00:00:00Z");
    let seg = get(format!("{RANGE}&interval=week&segments=enterprise"))
        .await
        .expect(200)
        .clone();
    assert_eq!(counts(&seg), [1, 2]);
    let hour = get("from=2026-01-04T09:00:00Z&to=2026-01-04T12:00:00Z&interval=hour".into())
        .await
        .expect(200)
        .clone();
    assert_eq!(counts(&hour), [0, 1, 0]);

    for (q, field, fragment) in [
        ("interval=month", "interval", "hour, day or week"),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=hour",
            "interval",
            "limit of 1000",
        ),
        (
            "from=2026-01-05T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
            "before",
        ),
        ("channels=fax", "channels", "fax"),
    ] {
        let r = get(q.to_owned()).await;
        let body = r.expect_error(400, "validation_failed");
        assert_eq!(body["error"]["details"][0]["field"], field, "{q}");
        assert!(body.to_string().contains(fragment), "{q}: {body}");
    }
}

#[tokio::test]
async fn summaries_are_cached_per_organization_and_never_stale_after_a_write_without_a_freshness_window() {
    let app = spawn_with(|c| c.query.summary_fresh_within = std::time::Duration::ZERO).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, _) = dataset(&app, &admin.access).await;
    let url = format!("/api/v1/insights/dashboard?{RANGE}");
    let first = app.get(&url, Some(&admin.access)).await;
    assert_eq!(cache_of(&first), "miss");
    let second = app.get(&url, Some(&admin.access)).await;
    assert_eq!(cache_of(&second), "hit");
    assert_eq!(first.body["totals"], second.body["totals"]);
    // The same parameters in another order are the same entry.
    let reordered = app
        .get(
            "/api/v1/insights/dashboard?to=2026-01-07T00:00:00Z&from=2026-01-01T00:00:00Z",
            Some(&admin.access),
        )
        .await;
    assert_eq!(cache_of(&reordered), "hit");
    // The key is {endpoint}:{organization}:{hash}, under the deployment's prefix.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}:dashboard:{}:*",
            app.config.redis_prefix,
            org.id.as_uuid()
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((290..=300).contains(&ttl), "5 minutes: {ttl}");

    // Another organization never reads this organization's entry.
    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    let theirs = app.get(&url, Some(&other_admin.access)).await;
    assert_eq!(cache_of(&theirs), "miss");
    assert_eq!(theirs.body["totals"]["interactions"], 0);

    // A write is seen by the very next read, for each cached endpoint.
    let trends_url = format!("/api/v1/insights/trends?{RANGE}");
    app.get(&trends_url, Some(&admin.access)).await.expect(200);
    let profile_url = format!("/api/v1/customers/{smb}");
    app.get(&profile_url, Some(&admin.access)).await.expect(200);
    let cached_profile = app.get(&profile_url, Some(&admin.access)).await;
    assert_eq!(cache_of(&cached_profile), "hit");
    assert_eq!(cached_profile.body["interactionCount"], 3);
    for n in 0..3 {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            json!({"customerId": smb, "channel": "web", "eventType": "visit",
                   "timestamp": format!("2026-01-02T1{n}:00:00Z")}),
        )
        .await
        .expect(201);
        let after = app.get(&url, Some(&admin.access)).await;
        assert_eq!(cache_of(&after), "miss");
        assert_eq!(after.body["totals"]["interactions"], 7 + n);
        let trends = app.get(&trends_url, Some(&admin.access)).await;
        assert_eq!(cache_of(&trends), "miss");
        assert_eq!(trends.body["points"][1]["interactions"], 2 + n);
        let profile = app.get(&profile_url, Some(&admin.access)).await;
        assert_eq!(cache_of(&profile), "miss");
        assert_eq!(profile.body["interactionCount"], 4 + n);
    }
    // Batches and customer changes invalidate too.
    app.get(&url, Some(&admin.access)).await.expect(200);
    app.post(
        "/api/v1/interactions/batch",
        Some(&admin.access),
        json!({"interactions": [{"customerId": smb, "channel": "chat", "eventType": "message",
               "content": "batch", "timestamp": "2026-01-03T12:00:00Z"}]}),
    )
    .await
    .expect(200);
    assert_eq!(
        app.get(&url, Some(&admin.access)).await.body["totals"]["interactions"],
        10
    );
    app.get(&profile_url, Some(&admin.access)).await.expect(200);
    app.call(
        reqwest::Method::PATCH,
        &profile_url,
        Some(&admin.access),
        Some(json!({"name": "Renamed"})),
    )
    .await
    .expect(200);
    let profile = app.get(&profile_url, Some(&admin.access)).await;
    assert_eq!(
        (cache_of(&profile), &profile.body["name"]),
        ("miss", &json!("Renamed"))
    );
    assert!(
        app.metric("insights_response_cache_lookups_total{endpoint=\"dashboard\",result=\"hit\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn under_continuous_writes_summaries_keep_hitting_and_show_a_write_within_the_freshness_window() {
    let window = std::time::Duration::from_millis(1500);
    let app = spawn_with(|c| c.query.summary_fresh_within = window).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, _) = dataset(&app, &admin.access).await;
    let url = format!("/api/v1/insights/dashboard?{RANGE}");
    let write = |n: u32| {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            json!({"customerId": smb, "channel": "web", "eventType": "visit",
                   "timestamp": format!("2026-01-02T{:02}:00:00Z", n % 24)}),
        )
    };
    assert_eq!(cache_of(&app.get(&url, Some(&admin.access)).await), "miss");
    // Writes between reads: the entry is younger than the window, so the reads still hit, with the
    // figures of when it was computed.
    write(0).await.expect(201);
    let during = app.get(&url, Some(&admin.access)).await;
    assert_eq!(cache_of(&during), "hit");
    assert_eq!(during.body["totals"]["interactions"], 6);
    // Within the window (plus the time to compute), every write is seen.
    let seen = eventually(window * 2, || async {
        let r = app.get(&url, Some(&admin.access)).await;
        r.body["totals"]["interactions"] == 7
    })
    .await;
    assert!(seen, "the write was not seen within the freshness window");
    // Reading while writing continuously: most reads hit.
    let mut hits = 0;
    for n in 1..=20 {
        write(n).await.expect(201);
        if cache_of(&app.get(&url, Some(&admin.access)).await) == "hit" {
            hits += 1;
        }
    }
    assert!(hits >= 10, "{hits} hits of 20 reads between writes");
    // A profile reads its own writes at once, window or not.
    let profile_url = format!("/api/v1/customers/{smb}");
    app.get(&profile_url, Some(&admin.access)).await.expect(200);
    app.call(
        reqwest::Method::PATCH,
        &profile_url,
        Some(&admin.access),
        Some(json!({"name": "Renamed"})),
    )
    .await
    .expect(200);
    assert_eq!(
        app.get(&profile_url, Some(&admin.access)).await.body["name"],
        "Renamed"
    );
}

#[tokio::test]
async fn readers_that_miss_together_compute_a_summary_once() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    dataset(&app, &admin.access).await;
    let url = format!("/api/v1/insights/dashboard?{RANGE}&interval=hour");
    let replies = futures_util::future::join_all((0..8).map(|_| app.get(&url, Some(&admin.access)))).await;
    let misses = replies.iter().filter(|r| cache_of(r) == "miss").count();
    let hits = replies.iter().filter(|r| cache_of(r) == "hit").count();
    assert_eq!(
        (misses, hits),
        (1, 7),
        "one reader computes, the others wait for it"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.body["totals"] == replies[0].body["totals"])
    );
}

/// Parses a CSV export into its header and rows.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

async fn export(app: &TestApp, token: &str, query: &str) -> (reqwest::StatusCode, String, String) {
    let resp = app
        .client
        .get(format!("{}/api/v1/export/interactions?{query}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

#[tokio::test]
async fn exports_stream_csv_and_ndjson_with_the_listing_filters() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, _) = dataset(&app, &admin.access).await;
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        json!({"customerId": smb, "channel": "email", "eventType": "message",
               "content": "=HYPERLINK(\"x\"), then \"quotes\",\nand a new line", "timestamp": "2026-01-07T10:00:00Z"}),
    )
    .await
    .expect(201);

    let (status, content_type, text) = export(&app, &admin.access, "format=csv&order=asc").await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let (header, rows) = parse_csv(&text);
    assert_eq!(
        header[..6],
        ["id", "customerId", "channel", "eventType", "timestamp", "content"]
    );
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0][4], "2026-01-01T10:00:00+00:00");
    assert_eq!(rows[0][5], "the delivery was late again");
    assert_eq!(rows[0][7], "negative");
    assert_eq!(
        rows[6][5], "'=HYPERLINK(\"x\"), then \"quotes\",\nand a new line",
        "quoted, and a formula is neutralized"
    );
    let listed: Vec<String> = app
        .get("/api/v1/interactions?order=asc", Some(&admin.access))
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), listed);

    let (status, content_type, text) = export(&app, &admin.access, "format=ndjson&channels=chat").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["channel"] == "chat"));
    assert_eq!(
        lines[0]["timestamp"], "2026-01-04T10:00:00Z",
        "newest first by default"
    );

    let (status, _, text) = export(&app, &admin.access, "format=xml&sort=size").await;
    assert_eq!(status, 400);
    assert!(text.contains("format") && text.contains("sort"), "{text}");
    let (_, viewer) = app.user_with_role(&admin, Role::Viewer).await;
    let (status, _, _) = export(&app, &viewer.access, "").await;
    assert_eq!(status, 403, "exports are for analysts and admins");
    let (_, analyst) = app.user_with_role(&admin, Role::Analyst).await;
    let (status, _, text) = export(&app, &analyst.access, "format=ndjson").await;
    assert_eq!((status.as_u16(), text.lines().count()), (200, 7));

    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    let (status, _, text) = export(&app, &other_admin.access, "format=csv").await;
    assert_eq!(
        (status.as_u16(), text.lines().count()),
        (200, 1),
        "only the header: {text}"
    );
    assert!(
        app.metric("insights_exports_total{format=\"csv\",outcome=\"completed\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn viewers_read_summaries_and_bad_tokens_do_not() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (_, viewer) = app.user_with_role(&admin, Role::Viewer).await;
    app.get("/api/v1/insights/dashboard", Some(&viewer.access))
        .await
        .expect(200);
    app.get("/api/v1/insights/trends", Some(&viewer.access))
        .await
        .expect(200);
    app.get("/api/v1/insights/dashboard", None)
        .await
        .expect_error(401, "unauthenticated");
    app.get("/api/v1/export/interactions", Some("nope"))
        .await
        .expect_error(401, "unauthenticated");
}
