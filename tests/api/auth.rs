use std::time::Duration;

use insights::domain::Role;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test]
async fn login_returns_both_tokens_and_the_user() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let b = &s.body;
    assert_eq!(b["tokenType"], "Bearer");
    assert_eq!(b["expiresIn"], 3600);
    assert_eq!(b["user"]["email"], org.admin_email.as_str());
    assert_eq!(b["user"]["role"], "admin");
    assert_eq!(b["user"]["organizationId"], org.id.to_string());
    assert_eq!(b["user"]["id"], org.admin_id.to_string());

    // The access token is an HS256 JWT with the documented claims.
    let header = jsonwebtoken::decode_header(&s.access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    let claims = app.token_keys().verify(&s.access).unwrap();
    assert_eq!(claims.sub, org.admin_id.as_uuid());
    assert_eq!(claims.org, org.id.as_uuid());
    assert_eq!(claims.role, Role::Admin);
    assert_eq!(
        claims.exp - claims.iat,
        3600,
        "access tokens live one hour (R1.1)"
    );

    // The refresh token is stored only as a digest, and lives seven days (R1.2).
    let row = sqlx::query!(
        "SELECT r.token_hash, r.expires_at - r.created_at AS lifetime FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE s.user_id = $1",
        org.admin_id.as_uuid()
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_ne!(row.token_hash, s.refresh.as_bytes());
    assert_eq!(row.token_hash, insights::auth::digest(&s.refresh));
    let lifetime = row.lifetime.unwrap();
    let secs = i64::from(lifetime.days) * 86_400 + lifetime.microseconds / 1_000_000;
    assert!(
        (7 * 86_400 - 60..=7 * 86_400 + 60).contains(&secs),
        "refresh lifetime {secs}s"
    );
}

#[tokio::test]
async fn login_updates_last_login_and_passwords_use_bcrypt_cost_10() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let before = sqlx::query!(
        "SELECT last_login_at, password_hash FROM users WHERE id = $1",
        org.admin_id.as_uuid()
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(before.last_login_at.is_none());
    assert!(
        before.password_hash.starts_with("$2b$10$"),
        "bcrypt with 10 rounds: {}",
        before.password_hash
    );
    app.admin(&org).await;
    let after = sqlx::query_scalar!(
        "SELECT last_login_at FROM users WHERE id = $1",
        org.admin_id.as_uuid()
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(after.is_some());
}

#[tokio::test]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let wrong = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "not-the-password"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(
        wrong.body, unknown.body,
        "same body whether or not the email exists"
    );
    assert_eq!(
        wrong.headers["www-authenticate"],
        unknown.headers["www-authenticate"]
    );
    // An unknown email still costs one bcrypt verification (of a dummy hash), so it takes as long.
    assert_eq!(
        app.metric("insights_password_verifications_total{outcome=\"dummy\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("insights_password_verifications_total{outcome=\"mismatch\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn failed_logins_are_recorded_with_time_and_ip() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": org.admin_email, "password": "wrong-password"}),
    )
    .await
    .expect(401);
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": "ghost@example.com", "password": "wrong-password"}),
    )
    .await
    .expect(401);
    app.admin(&org).await;
    let rows = sqlx::query!(
        r#"SELECT kind, email, host(ip) AS "ip!", user_id, created_at FROM auth_events ORDER BY created_at"#
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["login_failed", "login_failed", "login_succeeded"]);
    assert_eq!(rows[0].user_id, Some(org.admin_id.as_uuid()));
    assert_eq!(rows[1].email.as_deref(), Some("ghost@example.com"));
    assert!(rows[1].user_id.is_none());
    assert!(rows.iter().all(|r| r.ip == "127.0.0.1"));
}

#[tokio::test]
async fn five_failures_throttle_the_account_with_retry_after() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    for _ in 0..5 {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "wrong-password"}),
        )
        .await
        .expect(401);
    }
    // Even the right password is refused until the window ends (R1.5).
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await;
    r.expect_error(429, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "retry-after {retry}");
    let throttled =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM auth_events WHERE kind = 'login_throttled'"#)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(throttled, 1);
}

#[tokio::test]
async fn the_throttle_window_ends() {
    let app = spawn_with(|c| c.auth.login_failure_window = Duration::from_secs(1)).await;
    let org = app.create_org().await;
    for _ in 0..5 {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "wrong-password"}),
        )
        .await;
    }
    let body = json!({"email": org.admin_email, "password": org.admin_password});
    app.post("/api/v1/auth/login", None, body.clone())
        .await
        .expect(429);
    let ok = crate::helpers::eventually(Duration::from_secs(5), || async {
        app.post("/api/v1/auth/login", None, body.clone()).await.status == 200
    })
    .await;
    assert!(ok, "login works again once the window has passed");
}

#[tokio::test]
async fn login_validates_every_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "not-an-email", "password": 12}),
        )
        .await;
    let b = r.expect_error(400, "validation_failed");
    let fields: Vec<&str> = b["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["password", "email"]);
    let r = app.post("/api/v1/auth/login", None, json!({})).await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let r = crate::helpers::read(r).await;
    r.expect_error(400, "bad_request");
    let r = app.post("/api/v1/auth/login", None, json!([1, 2])).await;
    r.expect_error(400, "validation_failed");
}

#[tokio::test]
async fn me_returns_the_user_and_requires_a_valid_token() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let me = app.get("/api/v1/me", Some(&s.access)).await;
    let b = me.expect(200);
    assert_eq!(b["email"], org.admin_email.as_str());
    assert!(b.get("passwordHash").is_none() && b.get("password_hash").is_none());
    assert!(b["lastLoginAt"].is_string());

    app.get("/api/v1/me", None)
        .await
        .expect_error(401, "unauthenticated");
    app.get("/api/v1/me", Some("garbage"))
        .await
        .expect_error(401, "unauthenticated");
    let mut tampered = s.access.clone();
    tampered.pop();
    tampered.push(if s.access.ends_with('A') { 'B' } else { 'A' });
    app.get("/api/v1/me", Some(&tampered))
        .await
        .expect_error(401, "unauthenticated");
    let r = app
        .client
        .get(format!("{}/api/v1/me", app.base))
        .header("authorization", format!("Basic {}", s.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let claims = app.token_keys();
    let real = claims.verify(&s.access).unwrap();
    let (expired, _) = claims
        .issue(
            real.user_id(),
            real.organization_id(),
            Role::Admin,
            real.session_id(),
            Duration::from_secs(60),
            chrono::Utc::now() - chrono::Duration::seconds(600),
        )
        .unwrap();
    app.get("/api/v1/me", Some(&expired))
        .await
        .expect_error(401, "unauthenticated");
}

#[tokio::test]
async fn refresh_rotates_and_a_used_token_is_rejected() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
        .await;
    let b = r.expect(200).clone();
    let new_refresh = b["refreshToken"].as_str().unwrap().to_owned();
    let new_access = b["accessToken"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, s.refresh);
    assert_eq!(b["expiresIn"], 3600);
    app.get("/api/v1/me", Some(&new_access)).await.expect(200);

    // The spent token is refused, and presenting it again revokes the whole session (it was copied).
    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
        .await
        .expect_error(401, "unauthenticated");
    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": new_refresh}))
        .await
        .expect_error(401, "unauthenticated");
    app.get("/api/v1/me", Some(&new_access))
        .await
        .expect_error(401, "unauthenticated");
    let reused =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM auth_events WHERE kind = 'refresh_reused'"#)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(reused, 1);

    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": "made-up"}))
        .await
        .expect_error(401, "unauthenticated");
    app.post("/api/v1/auth/refresh", None, json!({}))
        .await
        .expect_error(400, "validation_failed");
}

#[tokio::test]
async fn logout_revokes_the_access_and_refresh_token_at_once() {
    for redis in [true, false] {
        let app = spawn_with(|c| {
            if !redis {
                c.redis_url = None;
            }
        })
        .await;
        let org = app.create_org().await;
        let s = app.admin(&org).await;
        let other = app.admin(&org).await;
        // Verify once so the token sits in the cache; logout must still win over the cached entry.
        app.get("/api/v1/me", Some(&s.access)).await.expect(200);
        app.get("/api/v1/me", Some(&s.access)).await.expect(200);
        assert!(
            app.metric("insights_token_cache_lookups_total{result=\"hit\"}")
                .await
                >= 1.0,
            "redis={redis}"
        );
        let r = app.post("/api/v1/auth/logout", Some(&s.access), json!({})).await;
        assert_eq!(r.status, 204, "redis={redis}");
        app.get("/api/v1/me", Some(&s.access))
            .await
            .expect_error(401, "unauthenticated");
        app.post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
            .await
            .expect(401);
        // Another session of the same user is untouched.
        app.get("/api/v1/me", Some(&other.access)).await.expect(200);
        let kinds = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM auth_events WHERE kind = 'logout'"#)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(kinds, 1);
    }
}

#[tokio::test]
async fn verified_tokens_are_cached_in_redis_for_at_most_an_hour() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    app.get("/api/v1/me", Some(&s.access)).await.expect(200);
    let jti = app.token_keys().verify(&s.access).unwrap().jti;
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:{}", app.config.redis_prefix, insights::auth::token_key(jti));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    app.post("/api/v1/auth/logout", Some(&s.access), json!({})).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "logout drops the cached token");
}

#[tokio::test]
async fn password_change_revokes_every_token_of_the_user() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let a = app.admin(&org).await;
    let b = app.admin(&org).await;
    app.get("/api/v1/me", Some(&b.access)).await.expect(200);
    let bad = app
        .post(
            "/api/v1/auth/password",
            Some(&a.access),
            json!({"currentPassword": "wrong-one", "newPassword": "short"}),
        )
        .await;
    let details = bad.expect_error(400, "validation_failed")["error"]["details"].clone();
    assert_eq!(details[0]["field"], "newPassword", "{details}");
    let wrong = app
        .post(
            "/api/v1/auth/password",
            Some(&a.access),
            json!({"currentPassword": "wrong-one", "newPassword": "a-new-password"}),
        )
        .await;
    assert_eq!(
        wrong.expect_error(400, "validation_failed")["error"]["details"][0]["field"],
        "currentPassword"
    );

    let r = app
        .post(
            "/api/v1/auth/password",
            Some(&a.access),
            json!({"currentPassword": org.admin_password, "newPassword": "a-new-password"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{:?}", r.body);
    for token in [&a.access, &b.access] {
        app.get("/api/v1/me", Some(token))
            .await
            .expect_error(401, "unauthenticated");
    }
    for refresh in [&a.refresh, &b.refresh] {
        app.post("/api/v1/auth/refresh", None, json!({"refreshToken": refresh}))
            .await
            .expect(401);
    }
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": org.admin_email, "password": org.admin_password}),
    )
    .await
    .expect(401);
    app.login(&org.admin_email, "a-new-password").await;
}

#[tokio::test]
async fn a_deleted_users_tokens_stop_working() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (user, s) = app.user_with_role(&admin, Role::Analyst).await;
    app.get("/api/v1/me", Some(&s.access)).await.expect(200);
    let id = user["id"].as_str().unwrap();
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/users/{id}"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.get("/api/v1/me", Some(&s.access))
        .await
        .expect_error(401, "unauthenticated");
    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
        .await
        .expect_error(401, "unauthenticated");
}

#[tokio::test]
async fn the_refresh_token_is_a_jwt_and_neither_kind_is_accepted_for_the_other() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let secret = app
        .config
        .jwt_secret
        .as_ref()
        .unwrap()
        .expose()
        .as_bytes()
        .to_vec();
    let header = jsonwebtoken::decode_header(&s.refresh).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.kid, Some(insights::auth::token::key_id(&secret)));
    let keys = app.token_keys();
    let claims = keys.verify_refresh(&s.refresh).unwrap();
    let access = keys.verify(&s.access).unwrap();
    assert_eq!(claims.typ, "refresh");
    assert_eq!(
        claims.exp - claims.iat,
        7 * 86_400,
        "refresh tokens live seven days (R1.2)"
    );
    assert_eq!(
        (claims.sub, claims.org, claims.sid),
        (access.sub, access.org, access.sid)
    );
    // Its jti is the id of its stored row.
    let stored = |token: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM refresh_tokens WHERE token_hash = $1")
                .bind(insights::auth::digest(&token))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(stored(s.refresh.clone()).await, claims.jti);

    // Each kind is refused where the other is expected, and the refusals spend nothing.
    app.get("/api/v1/me", Some(&s.refresh))
        .await
        .expect_error(401, "unauthenticated");
    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": s.access}))
        .await
        .expect_error(401, "unauthenticated");
    app.get("/api/v1/me", Some(&s.access)).await.expect(200);
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
        .await;
    let next = r.expect(200)["refreshToken"].as_str().unwrap().to_owned();
    let next_claims = keys.verify_refresh(&next).unwrap();
    assert_ne!(next_claims.jti, claims.jti);
    assert_eq!(next_claims.sid, claims.sid, "the same session");
    assert_eq!(stored(next).await, next_claims.jti);

    // Expired, or signed with another secret: refused before any lookup.
    let other = insights::auth::token::TokenKeys::new(b"another-secret-another-secret-xx", None).unwrap();
    let ttl = Duration::from_secs(7 * 86_400);
    let (forged, _) = other
        .issue_refresh(
            insights::domain::UserId(claims.sub),
            insights::domain::OrganizationId(claims.org),
            insights::domain::SessionId(claims.sid),
            next_claims.jti,
            ttl,
            chrono::Utc::now(),
        )
        .unwrap();
    let (expired, _) = keys
        .issue_refresh(
            insights::domain::UserId(claims.sub),
            insights::domain::OrganizationId(claims.org),
            insights::domain::SessionId(claims.sid),
            next_claims.jti,
            Duration::from_secs(60),
            chrono::Utc::now() - chrono::Duration::seconds(600),
        )
        .unwrap();
    for token in [forged, expired] {
        app.post("/api/v1/auth/refresh", None, json!({"refreshToken": token}))
            .await
            .expect_error(401, "unauthenticated");
    }
}

#[tokio::test]
async fn the_jwt_secret_rotates_without_signing_anyone_out() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let s = app.admin(&org).await;
    let old = app.config.jwt_secret.clone().unwrap();
    let new = insights::config::Secret::new(format!("rotated-{}", uuid::Uuid::new_v4().simple()));
    // A node signing with the new secret and still verifying the old one.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let rotated = crate::helpers::start(insights::config::Config {
        node_name: format!("rotated-{id}"),
        data_dir: std::env::temp_dir().join(format!("insights-test-{id}")),
        jwt_secret: Some(new.clone()),
        jwt_secret_previous: Some(old.clone()),
        ..app.config.clone()
    })
    .await;
    rotated.get("/api/v1/me", Some(&s.access)).await.expect(200);
    let r = rotated
        .post("/api/v1/auth/refresh", None, json!({"refreshToken": s.refresh}))
        .await;
    let body = r.expect(200).clone();
    let (access, refresh) = (
        body["accessToken"].as_str().unwrap().to_owned(),
        body["refreshToken"].as_str().unwrap().to_owned(),
    );
    let new_kid = insights::auth::token::key_id(new.expose().as_bytes());
    for token in [&access, &refresh] {
        assert_eq!(
            jsonwebtoken::decode_header(token).unwrap().kid,
            Some(new_kid.clone())
        );
    }
    // The old secret verifies only: a node on it alone refuses the new tokens...
    app.get("/api/v1/me", Some(&access))
        .await
        .expect_error(401, "unauthenticated");
    // ...and once the previous secret is dropped, tokens signed with it are refused.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dropped = crate::helpers::start(insights::config::Config {
        node_name: format!("dropped-{id}"),
        data_dir: std::env::temp_dir().join(format!("insights-test-{id}")),
        jwt_secret: Some(new),
        jwt_secret_previous: None,
        ..app.config.clone()
    })
    .await;
    dropped.get("/api/v1/me", Some(&access)).await.expect(200);
    let (old_token, _) = app
        .token_keys()
        .issue(
            org.admin_id,
            org.id,
            Role::Admin,
            insights::domain::SessionId(app.token_keys().verify(&s.access).unwrap().sid),
            Duration::from_secs(600),
            chrono::Utc::now(),
        )
        .unwrap();
    rotated.get("/api/v1/me", Some(&old_token)).await.expect(200);
    dropped
        .get("/api/v1/me", Some(&old_token))
        .await
        .expect_error(401, "unauthenticated");
}
