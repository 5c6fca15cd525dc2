use std::collections::BTreeSet;

use reqwest::Method;

use crate::helpers::spawn_app;

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let app = spawn_app().await;
    let doc = app.get("/api/v1/openapi.json", None).await.expect(200).clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = insights::http::endpoints(app.app.as_ref().unwrap().state())
        .iter()
        .map(|e| (e.method.to_string(), e.path.to_owned()))
        .collect();
    assert_eq!(served, documented, "router and OpenAPI document disagree");

    // Each documented route is really routed: it never answers route_not_found or 405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "5f1d7c4e-0000-4000-8000-000000000000");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.call(method.clone(), &concrete, None, None).await;
        assert_ne!(r.body["error"]["code"], "route_not_found", "{method} {path}");
        assert_ne!(r.status.as_u16(), 405, "{method} {path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
