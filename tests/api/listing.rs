use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_with};

/// Six interactions with known channels, times, segments, texts and scores.
pub async fn dataset(app: &TestApp, token: &str) -> (String, String) {
    let smb = app.customer(token, "smb-1", Some("smb")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ent = app.customer(token, "ent-1", Some("enterprise")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows = [
        (
            &smb,
            "chat",
            "the delivery was late again",
            "2026-01-01T10:00:00Z",
            Some(-0.8),
        ),
        (
            &smb,
            "email",
            "thanks for the refund",
            "2026-01-02T10:00:00Z",
            Some(0.7),
        ),
        (&smb, "web", "", "2026-01-03T10:00:00Z", None),
        (
            &ent,
            "chat",
            "great onboarding call",
            "2026-01-04T10:00:00Z",
            Some(0.9),
        ),
        (
            &ent,
            "phone",
            "late invoice question",
            "2026-01-05T10:00:00Z",
            Some(0.0),
        ),
        (&ent, "mobile", "", "2026-01-06T10:00:00Z", None),
    ];
    for (customer, channel, content, at, score) in rows {
        let mut body = json!({"customerId": customer, "channel": channel, "eventType": "e", "timestamp": at});
        if !content.is_empty() {
            body["content"] = json!(content);
        }
        let id = app
            .post("/api/v1/interactions", Some(token), body)
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if let Some(s) = score {
            let s: f32 = s;
            let (pos, neg) = if s >= 0.0 { (s, 0.0) } else { (0.0, -s) };
            let neu = 1.0 - pos - neg;
            sqlx::query(
                "UPDATE customer_interactions SET sentiment_positive = $2, sentiment_negative = $3, sentiment_neutral = $4,
                     sentiment_score = $5, sentiment_label = $6::text::sentiment_label, sentiment_confidence = $4,
                     processed_at = now()
                 WHERE id = $1",
            )
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .bind(pos)
            .bind(neg)
            .bind(neu)
            .bind(s)
            .bind(label(s))
            .execute(&app.pool)
            .await
            .unwrap();
        }
    }
    (smb, ent)
}

/// `GET /api/v1/interactions?{q}`, which must answer 200.
async fn listing(app: &TestApp, token: &str, q: String) -> Value {
    app.get(&format!("/api/v1/interactions?{q}"), Some(token))
        .await
        .expect(200)
        .clone()
}

/// The model's label for a score.
fn label(score: f32) -> &'static str {
    if score > 0.05 {
        "positive"
    } else if score < -0.05 {
        "negative"
    } else {
        "neutral"
    }
}

fn sorted(days: &[u32]) -> Vec<u32> {
    let mut v = days.to_vec();
    v.sort_unstable();
    v
}

fn days(body: &Value) -> Vec<u32> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["timestamp"].as_str().unwrap()[8..10].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn every_filter_and_sort_has_a_known_answer() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, ent) = dataset(&app, &admin.access).await;
    let get = |q: String| listing(&app, &admin.access, q);
    let all = get(String::new()).await;
    assert_eq!(days(&all), [6, 5, 4, 3, 2, 1], "newest first by default");
    assert_eq!(
        all["pagination"],
        json!({"page": 1, "pageSize": 20, "total": 6, "totalRelation": "eq", "totalPages": 1})
    );
    assert_eq!(days(&get("order=asc".into()).await), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        days(&get("from=2026-01-02T00:00:00Z&to=2026-01-05T00:00:00Z".into()).await),
        [4, 3, 2]
    );
    assert_eq!(days(&get("channels=chat,email".into()).await), [4, 2, 1]);
    assert_eq!(days(&get("sentimentMin=0.5".into()).await), [4, 2]);
    assert_eq!(days(&get("sentimentMin=-1&sentimentMax=0".into()).await), [5, 1]);
    assert_eq!(days(&get("segments=enterprise".into()).await), [6, 5, 4]);
    assert_eq!(days(&get(format!("customerId={smb}")).await), [3, 2, 1]);
    assert_eq!(days(&get("q=late".into()).await), [5, 1], "full-text search");
    assert_eq!(days(&get("q=deliveries".into()).await), [1], "stemmed");
    assert_eq!(
        days(&get(format!("customerId={ent}&channels=chat,phone&sentimentMin=0.5")).await),
        [4],
        "filters combine"
    );
    // Equal keys are ordered by id (random UUIDs), so tied groups are compared as sets.
    let asc = days(&get("sort=sentiment&order=asc".into()).await);
    assert_eq!(sorted(&asc[..2]), [3, 6], "unscored first when ascending");
    assert_eq!(asc[2..], [1, 5, 2, 4]);
    let desc = days(&get("sort=sentiment&order=desc".into()).await);
    assert_eq!(desc[..4], [4, 2, 5, 1]);
    assert_eq!(sorted(&desc[4..]), [3, 6], "unscored last when descending");
    let by_channel = days(&get("sort=channel&order=asc".into()).await);
    assert_eq!(
        by_channel[..3],
        [3, 6, 2],
        "enum order: web, mobile, email, chat, phone"
    );
    assert_eq!(by_channel[3..5], [1, 4], "oldest first within a channel");
    assert_eq!(by_channel[5], 5);
    let page = get("pageSize=4&page=2&order=asc".into()).await;
    assert_eq!(days(&page), [5, 6]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "pageSize": 4, "total": 6, "totalRelation": "eq", "totalPages": 2})
    );
    assert_eq!(
        get("pageSize=4&page=2&order=asc".into()).await,
        page,
        "identical queries, identical pages"
    );
    let scored = get("sentimentMin=0.5".into()).await;
    assert_eq!(scored["data"][0]["sentiment"]["score"], 0.9);
}

#[tokio::test]
async fn totals_are_exact_from_the_rollups_and_bounded_otherwise() {
    // A bound of 2: the known dataset has more matches than that for several filters.
    // No freshness window, so a bounded count cached before a write is not served after it.
    let app = spawn_with(|c| {
        c.query.count_bound = 2;
        c.query.summary_fresh_within = std::time::Duration::ZERO;
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (smb, _) = dataset(&app, &admin.access).await;
    let get = |q: String| listing(&app, &admin.access, q);
    let total = |v: &Value| {
        (
            v["pagination"]["total"].as_i64().unwrap(),
            v["pagination"]["totalRelation"].as_str().unwrap().to_owned(),
        )
    };
    // Range, channels and segments are counted exactly from the rollups, however many match.
    for (q, n) in [
        ("", 6),
        ("from=2026-01-02T00:00:00Z&to=2026-01-05T00:00:00Z", 3),
        ("from=2026-01-02T10:30:00Z&to=2026-01-04T10:00:00.001Z", 2),
        ("channels=chat,email", 3),
        ("segments=enterprise&channels=chat,phone,mobile", 3),
    ] {
        assert_eq!(total(&get(q.to_owned()).await), (n, "eq".to_owned()), "{q}");
    }
    // The others are counted up to the bound, then say "at least".
    for q in ["sentimentMin=-1", format!("customerId={smb}").as_str()] {
        assert_eq!(total(&get(q.to_owned()).await), (2, "gte".to_owned()), "{q}");
    }
    for (q, n) in [("sentimentMin=0.8", 1), ("q=refund", 1), ("q=late", 2)] {
        assert_eq!(total(&get(q.to_owned()).await), (n, "eq".to_owned()), "{q}");
    }
    // A term with more matches than the bound is read in the sort order's index, with the same answer.
    let frequent = get("q=late&sort=sentiment&order=asc".into()).await;
    assert_eq!(days(&frequent), [1, 5]);
    let frequent = get("sentimentMax=1&q=late".into()).await;
    assert_eq!(days(&frequent), [5, 1]);
    // Paging through a bounded total still walks every row, by cursor.
    let first = get("sentimentMin=-1&pageSize=2".into()).await;
    assert_eq!(total(&first), (2, "gte".to_owned()));
    let cursor = first["pagination"]["nextCursor"].as_str().unwrap().to_owned();
    let second = get(format!("sentimentMin=-1&pageSize=2&cursor={cursor}")).await;
    assert_eq!(days(&first).len() + days(&second).len(), 4);
    assert!(second["pagination"]["nextCursor"].is_null());
    // A write is counted at once.
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        json!({"customerId": smb, "channel": "web", "eventType": "visit", "timestamp": "2026-01-03T11:00:00Z"}),
    )
    .await
    .expect(201);
    assert_eq!(total(&get(String::new()).await), (7, "eq".to_owned()));
}

#[tokio::test]
async fn bad_parameters_are_all_listed_and_other_tenants_see_nothing() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    dataset(&app, &admin.access).await;
    let r = app
        .get("/api/v1/interactions?pageSize=101", Some(&admin.access))
        .await;
    assert!(
        r.expect_error(400, "validation_failed")
            .to_string()
            .contains("100"),
        "the limit is named"
    );
    let r = app
        .get(
            "/api/v1/interactions?from=yesterday&channels=fax&sentimentMin=2&customerId=x&sort=size&order=up",
            Some(&admin.access),
        )
        .await;
    let fields: Vec<String> = r.expect_error(400, "validation_failed")["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        ["from", "channels", "sentimentMin", "customerId", "sort", "order"]
    );
    let r = app
        .get(
            "/api/v1/interactions?sentimentMin=0.5&sentimentMax=0.1",
            Some(&admin.access),
        )
        .await;
    r.expect_error(400, "validation_failed");

    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    let none = app
        .get("/api/v1/interactions", Some(&other_admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(none["pagination"]["total"], 0);
}

/// Every id of a listing, read page by page through `nextCursor`.
async fn walk(app: &TestApp, token: &str, query: &str, page_size: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = format!("/api/v1/interactions?{query}&pageSize={page_size}");
    for _ in 0..20 {
        let body = app.get(&url, Some(token)).await.expect(200).clone();
        for item in body["data"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match body["pagination"]["nextCursor"].as_str() {
            Some(cursor) => {
                url = format!("/api/v1/interactions?{query}&pageSize={page_size}&cursor={cursor}");
            }
            None => return ids,
        }
    }
    panic!("the cursor never ended");
}

#[tokio::test]
async fn cursors_walk_every_sort_exactly_like_offsets_do() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    dataset(&app, &admin.access).await;
    for sort in ["timestamp", "sentiment", "channel", "createdAt"] {
        for order in ["asc", "desc"] {
            for filter in ["", "&channels=chat,web,mobile", "&segments=smb"] {
                let query = format!("sort={sort}&order={order}{filter}");
                let all: Vec<String> = app
                    .get(
                        &format!("/api/v1/interactions?{query}&pageSize=100"),
                        Some(&admin.access),
                    )
                    .await
                    .expect(200)["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned())
                    .collect();
                for size in [1, 2, 4] {
                    assert_eq!(
                        walk(&app, &admin.access, &query, size).await,
                        all,
                        "{query} by {size}"
                    );
                }
            }
        }
    }
    // A cursor belongs to its query.
    let first = app
        .get("/api/v1/interactions?pageSize=2", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    let cursor = first["pagination"]["nextCursor"].as_str().unwrap().to_owned();
    assert_eq!(first["pagination"]["page"], 1);
    let next = app
        .get(
            &format!("/api/v1/interactions?pageSize=2&cursor={cursor}"),
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert!(
        next["pagination"].get("page").is_none(),
        "no page number with a cursor"
    );
    assert_eq!(next["pagination"]["total"], 6);
    for (query, fragment) in [
        (format!("order=asc&cursor={cursor}"), "sort or order"),
        (format!("sort=sentiment&cursor={cursor}"), "sort or order"),
        (format!("channels=chat&cursor={cursor}"), "filters"),
        (format!("page=2&cursor={cursor}"), "page"),
        ("cursor=abc".to_owned(), "not a cursor"),
        ("cursor=eyJwIjoxfQ".to_owned(), "not a cursor"),
    ] {
        let r = app
            .get(&format!("/api/v1/interactions?{query}"), Some(&admin.access))
            .await;
        let body = r.expect_error(400, "validation_failed");
        assert_eq!(body["error"]["details"][0]["field"], "cursor", "{query}");
        assert!(body.to_string().contains(fragment), "{query}: {body}");
    }
}
