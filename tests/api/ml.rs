//! The sentiment model through the API: golden scores shared with the training script, invariants,
//! cache, batches that do not change scores, and 503 when the pool is down.
//!
//! Needs ONNX Runtime: `ORT_DYLIB_PATH` names `libonnxruntime.so` from the PyPI `onnxruntime` wheel
//! (`.ci/run` installs it and sets the variable).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_with};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

async fn ml_app() -> TestApp {
    spawn_with(|c| {
        c.ml.enabled = true;
        c.ml.required = true;
        c.ml.workers = 1;
        c.model_dir = model_dir();
    })
    .await
}

#[test]
fn preprocessing_and_token_ids_match_the_training_script() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("golden.json")).unwrap()).unwrap();
    let cases = golden["cases"].as_array().or_else(|| golden.as_array()).unwrap();
    assert!(cases.len() >= 10);
    let model = insights::ml::model::SentimentModel::load(&model_dir(), None, 1)
        .expect("model loads (is ORT_DYLIB_PATH set?)");
    for case in cases {
        let raw = case["text"].as_str().unwrap();
        let pre = insights::ml::preprocess::preprocess(raw);
        assert_eq!(
            pre,
            case["preprocessed"].as_str().unwrap(),
            "preprocessing of {raw:?}"
        );
        let ids = model.token_ids(&pre).unwrap();
        let expected: Vec<i64> = case["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ids, expected, "token ids of {pre:?}");
        let scores = model.score(&pre).unwrap();
        let probs: Vec<f32> = case["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (got, want) in [scores.positive, scores.negative, scores.neutral]
            .iter()
            .zip(&probs)
        {
            assert!(
                (got - want).abs() < 1e-4,
                "scores of {raw:?}: got {scores:?}, golden {probs:?}"
            );
        }
    }
}

fn check_invariants(p: &Value) {
    let (pos, neg, neu) = (
        p["positive"].as_f64().unwrap(),
        p["negative"].as_f64().unwrap(),
        p["neutral"].as_f64().unwrap(),
    );
    for v in [pos, neg, neu] {
        assert!((0.0..=1.0).contains(&v), "{p}");
    }
    assert!((pos + neg + neu - 1.0).abs() <= 0.001, "sums to 1: {p}");
    let max = pos.max(neg).max(neu);
    assert!(
        (p["confidence"].as_f64().unwrap() - max).abs() < 1e-6,
        "confidence is the highest score: {p}"
    );
    assert!((p["score"].as_f64().unwrap() - (pos - neg)).abs() < 1e-6);
    let label = if max == pos {
        "positive"
    } else if max == neg {
        "negative"
    } else {
        "neutral"
    };
    assert_eq!(p["label"], label);
    assert_eq!(p["model"], "sentiment-minilm-v1");
}

#[tokio::test]
async fn predictions_hold_their_invariants_and_are_cached() {
    let app = ml_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let good = app
        .post(
            "/api/v1/ml/sentiment",
            Some(&admin.access),
            json!({"text": "I love this product, the support team was wonderful!"}),
        )
        .await;
    let good = good.expect(200).clone();
    check_invariants(&good);
    assert_eq!(good["label"], "positive");
    assert_eq!(good["cached"], false);
    let bad = app
        .post(
            "/api/v1/ml/sentiment",
            Some(&admin.access),
            json!({"text": "Terrible service, my order never arrived and nobody answers."}),
        )
        .await;
    check_invariants(bad.expect(200));
    assert_eq!(bad.body["label"], "negative");

    // The same text after preprocessing (case, spacing) is served from the cache.
    let again = app
        .post(
            "/api/v1/ml/sentiment",
            Some(&admin.access),
            json!({"text": "  I LOVE this product,   the support team was wonderful!"}),
        )
        .await;
    let again = again.expect(200).clone();
    assert_eq!(again["cached"], true);
    assert_eq!(again["positive"], good["positive"]);
    assert_eq!(app.metric("insights_ml_cache_total{result=\"hit\"}").await, 1.0);
    let key = format!(
        "{}:{}",
        app.config.redis_prefix,
        insights::ml::cache_key(&insights::ml::preprocess::preprocess(
            "I love this product, the support team was wonderful!"
        ))
    );
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((3500..=3600).contains(&ttl), "cached for an hour: {ttl}");
}

#[tokio::test]
async fn a_texts_scores_do_not_depend_on_its_batch() {
    let app = ml_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let texts: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            0 => format!("Order {i} arrived broken, I want a refund now"),
            1 => format!("Thanks for the quick reply to ticket {i}, very helpful"),
            2 => format!("What are your opening hours on day {i}?"),
            _ => format!("meh. it works i guess, version {i}.0 is ok"),
        })
        .collect();
    let batch = app
        .post(
            "/api/v1/ml/sentiment/batch",
            Some(&admin.access),
            json!({"texts": texts}),
        )
        .await
        .expect(200)
        .clone();
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), 40);
    // Alone, each text gets exactly the scores it got in the batch (the cache is bypassed: another node
    // prefix would share nothing, so compare against a fresh app).
    let fresh = ml_app().await;
    let org2 = fresh.create_org().await;
    let admin2 = fresh.admin(&org2).await;
    for (text, in_batch) in texts.iter().zip(results) {
        check_invariants(in_batch);
        let alone = fresh
            .post(
                "/api/v1/ml/sentiment",
                Some(&admin2.access),
                json!({"text": text}),
            )
            .await
            .expect(200)
            .clone();
        assert_eq!(alone["cached"], false);
        for k in ["positive", "negative", "neutral"] {
            assert_eq!(alone[k], in_batch[k], "{k} of {text:?}");
        }
    }
}

#[tokio::test]
async fn bad_texts_are_refused_and_a_stopped_pool_answers_503() {
    let app = ml_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.post(
        "/api/v1/ml/sentiment",
        Some(&admin.access),
        json!({"text": "   "}),
    )
    .await
    .expect_error(400, "validation_failed");
    app.post("/api/v1/ml/sentiment", Some(&admin.access), json!({}))
        .await
        .expect_error(400, "validation_failed");
    let r = app
        .post(
            "/api/v1/ml/sentiment/batch",
            Some(&admin.access),
            json!({"texts": ["fine", "", 3]}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    app.post(
        "/api/v1/ml/sentiment/batch",
        Some(&admin.access),
        json!({"texts": too_many}),
    )
    .await
    .expect_error(400, "validation_failed");
    assert_eq!(
        app.get("/readyz", None).await.expect(200)["checks"]["model"]["status"],
        "up"
    );

    app.app.as_ref().unwrap().state().ml.shutdown();
    let down = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        app.post(
            "/api/v1/ml/sentiment",
            Some(&admin.access),
            json!({"text": "hello there"}),
        )
        .await
        .status
            == 503
    })
    .await;
    assert!(down, "503 once the pool is down");
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["checks"]["model"]["status"], "down");
}

#[tokio::test]
async fn a_missing_model_stops_start_up_unless_optional() {
    let config = {
        let mut c = crate::helpers::test_config();
        c.ml.enabled = true;
        c.model_dir = PathBuf::from("/nonexistent-models");
        c
    };
    let err = insights::App::build(config.clone())
        .await
        .err()
        .expect("start-up refused");
    assert!(
        err.to_string().contains("cannot load the sentiment model"),
        "{err}"
    );
    let mut optional = config;
    optional.ml.required = false;
    let app = crate::helpers::start(optional).await;
    let ready = app.get("/readyz", None).await.expect(200).clone();
    assert_eq!(ready["checks"]["model"]["status"], "down");
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.post(
        "/api/v1/ml/sentiment",
        Some(&admin.access),
        json!({"text": "hello"}),
    )
    .await
    .expect_error(503, "service_unavailable");
}
