//! Hostile input (R9.12, R9.13): every route's queries stay parameterized. SQL metacharacters go into
//! every path parameter, query parameter and body field the OpenAPI document lists, one at a time; no
//! request may answer 500, the rows that existed before are byte for byte the same afterwards, the
//! schema is intact, and text that was accepted is stored exactly as sent.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, interaction, spawn_with};

/// What an injection tries: closing a string, a comment, stacked statements, a tautology, a sleep, a
/// placeholder, LIKE wildcards, an escape, a cast, a JSON path.
const PAYLOADS: [&str; 10] = [
    "' OR '1'='1",
    "x'; DROP TABLE customer_interactions; --",
    "\" OR 1=1 --",
    "1); SELECT pg_sleep(5); --",
    "$1",
    "%_%",
    "\\'",
    "'::int",
    "a' UNION SELECT password_hash FROM users --",
    "{\"$where\": \"1\"}",
];

/// The tables whose rows must not change (an organization's event counter moves with every write).
const TABLES: [&str; 5] = [
    "organizations",
    "users",
    "customers",
    "customer_interactions",
    "api_keys",
];

/// Every row of the tables above that existed before (by id), as text, except `spared` ids (the rows the
/// test updates on purpose), and the shape of the schema.
async fn fingerprint(
    app: &TestApp,
    ids: &BTreeMap<&str, Vec<uuid::Uuid>>,
    spared: &[uuid::Uuid],
) -> Vec<String> {
    let mut out = Vec::new();
    for table in TABLES {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT (to_jsonb(t) - 'event_seq_reserved' - 'updated_at')::text FROM {table} t
              WHERE id = ANY($1) AND NOT id = ANY($2) ORDER BY id"
        )))
        .bind(&ids[table])
        .bind(spared)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        out.push(format!("{table}: {rows:?}"));
    }
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name || ':' || data_type FROM information_schema.columns
          WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    out.push(format!("schema: {columns:?}"));
    out
}

/// A valid body for each operation that takes one; `{target-customer}` and the like are filled in.
fn bodies(customer: &str, at: &str) -> BTreeMap<(&'static str, &'static str), Value> {
    BTreeMap::from([
        (
            ("POST", "/api/v1/auth/login"),
            json!({"email": "nobody@example.com", "password": "not the password"}),
        ),
        (
            ("POST", "/api/v1/auth/refresh"),
            json!({"refreshToken": "not.a.token"}),
        ),
        (
            ("POST", "/api/v1/users"),
            json!({"email": "hostile@example.com", "name": "Hostile", "password": "long enough pw", "role": "viewer"}),
        ),
        (
            ("PATCH", "/api/v1/users/{id}"),
            json!({"name": "Target", "role": "viewer"}),
        ),
        (("POST", "/api/v1/api-keys"), json!({"name": "hostile key"})),
        (
            ("POST", "/api/v1/customers"),
            json!({"externalId": "hostile", "name": "Hostile", "email": "h@example.com", "segment": "vip",
                   "attributes": {"plan": "gold", "tags": ["a"]}}),
        ),
        (
            ("PATCH", "/api/v1/customers/{id}"),
            json!({"name": "Target", "email": "t@example.com", "segment": "vip", "attributes": {"plan": "gold"}}),
        ),
        (
            ("POST", "/api/v1/interactions"),
            json!({"customerId": customer, "channel": "chat", "eventType": "message", "timestamp": at,
                   "content": "hello", "metadata": {"userAgent": "curl/8", "page": "/home"}, "idempotencyKey": "k"}),
        ),
        (
            ("POST", "/api/v1/interactions/batch"),
            json!({"interactions": [{"customerId": customer, "channel": "chat", "eventType": "message",
                   "timestamp": at, "content": "hello", "metadata": {"page": "/home"}}]}),
        ),
        (("POST", "/api/v1/ml/sentiment"), json!({"text": "hello"})),
        (
            ("PUT", "/api/v1/alert-rules"),
            json!({"enabled": true, "windowMinutes": 60, "sensitivity": 3, "note": "x"}),
        ),
        (
            ("POST", "/api/v1/ml/sentiment/batch"),
            json!({"texts": ["hello", "there"]}),
        ),
    ])
}

/// Every string in `body`, by its JSON pointer.
fn string_leaves(body: &Value, at: String, out: &mut Vec<String>) {
    match body {
        Value::String(_) => out.push(at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                string_leaves(v, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                string_leaves(v, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// `value` percent-encoded, every byte but letters and digits.
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The path with its parameters replaced by `value` (percent-encoded).
fn with_path_params(path: &str, value: &str) -> String {
    let encoded = percent(value);
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        out.push_str(&encoded);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn sql_metacharacters_in_every_parameter_and_field_change_nothing_and_never_fail() {
    // With the model, so the ML routes run their real path too.
    let app = spawn_with(crate::helpers::with_model).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = Some(admin.access.as_str());
    let customer = app.customer(&admin.access, "bystander", Some("vip")).await;
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    for text in ["first", "second"] {
        app.post(
            "/api/v1/interactions",
            token,
            interaction(&customer_id, "chat", Some(text)),
        )
        .await
        .expect(201);
    }
    let target = app.customer(&admin.access, "target", None).await;
    let target_id = target["id"].as_str().unwrap().to_owned();
    let (target_user, _) = app.user_with_role(&admin, insights::domain::Role::Viewer).await;
    let target_user_id = target_user["id"].as_str().unwrap().to_owned();
    app.post("/api/v1/api-keys", token, json!({"name": "existing"}))
        .await
        .expect(201);

    let mut ids = BTreeMap::new();
    for table in TABLES {
        let rows: Vec<uuid::Uuid> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {table}")))
                .fetch_all(&app.pool)
                .await
                .unwrap();
        ids.insert(table, rows);
    }
    let spared: Vec<uuid::Uuid> = [&target_id, &target_user_id]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let before = fingerprint(&app, &ids, &spared).await;

    let doc = app.get("/api/v1/openapi.json", None).await.expect(200).clone();
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    // New interactions go to the target customer, whose counters may move; the bystander's may not.
    let templates = bodies(&target_id, &at);
    let mut failures = Vec::new();
    let mut sent = 0usize;
    let mut record = |what: String, r: &crate::helpers::Reply| {
        if r.status.is_server_error() {
            failures.push(format!("{what}: {} {}", r.status, r.body));
        }
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method_name = method.to_uppercase();
            // Both end the caller's session, which the rest of the test needs.
            if path == "/api/v1/auth/logout" || path == "/api/v1/auth/password" {
                continue;
            }
            let http = Method::from_bytes(method_name.as_bytes()).unwrap();
            let key = templates
                .keys()
                .find(|(m, p)| *m == method_name && *p == path.as_str())
                .copied();
            let template = key.map(|k| templates[&k].clone());
            assert!(
                op.get("requestBody").is_none() || template.is_some(),
                "{method_name} {path} takes a body this test has no valid example of: add one to bodies()"
            );
            // The resource a PATCH changes on purpose; a path parameter elsewhere (a DELETE) is a payload only.
            let target_for = |p: &str| {
                if p.starts_with("/api/v1/users") {
                    target_user_id.clone()
                } else {
                    target_id.clone()
                }
            };
            let concrete = if path.contains('{') {
                path.replace("{id}", &target_for(path))
            } else {
                path.clone()
            };
            for payload in PAYLOADS {
                if path.contains('{') {
                    let r = app
                        .call(
                            http.clone(),
                            &with_path_params(path, payload),
                            token,
                            template.clone(),
                        )
                        .await;
                    sent += 1;
                    record(format!("{method_name} {path} path={payload:?}"), &r);
                    assert!(
                        r.status.is_client_error(),
                        "{method_name} {path} with id {payload:?}: {} {}",
                        r.status,
                        r.body
                    );
                }
                // A DELETE has an id only, and every payload id above is refused.
                let query_params = if http == Method::DELETE {
                    None
                } else {
                    op["parameters"].as_array()
                };
                for param in query_params.into_iter().flatten() {
                    if param["in"] != "query" {
                        continue;
                    }
                    let name = param["name"].as_str().unwrap();
                    let encoded = percent(payload);
                    let r = app
                        .call(
                            http.clone(),
                            &format!("{concrete}?{name}={encoded}"),
                            token,
                            template.clone(),
                        )
                        .await;
                    sent += 1;
                    record(format!("{method_name} {path} ?{name}={payload:?}"), &r);
                }
                let Some(template) = &template else { continue };
                let mut leaves = Vec::new();
                string_leaves(template, String::new(), &mut leaves);
                for pointer in leaves {
                    let mut body = template.clone();
                    *body.pointer_mut(&pointer).unwrap() = Value::String(payload.to_owned());
                    if pointer == "/email" && path == "/api/v1/users" {
                        // A payload that happens to be a valid address would otherwise be taken once.
                        body["email"] = json!(format!("{payload}@x"));
                    }
                    let r = app.call(http.clone(), &concrete, token, Some(body)).await;
                    sent += 1;
                    record(format!("{method_name} {path} {pointer}={payload:?}"), &r);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(sent > 500, "only {sent} requests were sent");

    let after = fingerprint(&app, &ids, &spared).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "rows or schema changed");
    }
    // Accepted text is stored as sent: each payload as the target customer's name reads back as sent,
    // and an injection is an external id and a message like any other.
    for payload in PAYLOADS {
        let path = format!("/api/v1/customers/{target_id}");
        app.call(Method::PATCH, &path, token, Some(json!({"name": payload})))
            .await
            .expect(200);
        let r = app.get(&path, token).await;
        assert_eq!(r.expect(200)["name"], payload, "{}", r.body);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM customers WHERE external_id = $1")
        .bind(PAYLOADS[1])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the injection is an external id like any other");
    let interactions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE content = $1")
            .bind(PAYLOADS[1])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(interactions >= 1, "the injection is a message like any other");
}
