//! The web dashboard: `web/index.html` at `/` and the files of `web/` under `/static/`, read from the
//! configured directory (`web_dir`), with a strict Content-Security-Policy (no inline script or style).

use std::path::Path;

use warp::Filter;
use warp::Reply as _;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use warp::reply::Response;

/// What the dashboard may load and connect to: its own origin only (and `wss:` to it).
pub const CSP: &str = "default-src 'self'; connect-src 'self' wss:; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `GET /` and `GET /static/...`.
pub fn routes(dir: &Path) -> BoxedFilter<(Response,)> {
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::fs::file(dir.join("index.html")))
        .map(|file: warp::fs::File| with_headers(file.into_response(), "no-cache"));
    let assets = warp::path("static")
        .and(warp::get())
        .and(warp::fs::dir(dir.to_path_buf()))
        .map(|file: warp::fs::File| with_headers(file.into_response(), "public, max-age=300"));
    index.or(assets).unify().boxed()
}

fn with_headers(mut r: Response, cache: &'static str) -> Response {
    let headers = r.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}
