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

/// The directory to serve: `dir`, or (when it has no `index.html`, e.g. a relative path run from another
/// directory) the `web/` of the source tree this binary was built from, if that has one.
fn resolve(dir: &Path) -> std::path::PathBuf {
    if dir.join("index.html").is_file() {
        return dir.to_path_buf();
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    if dir.is_relative() && built_from.join("index.html").is_file() {
        return built_from;
    }
    tracing::warn!(dir = %dir.display(), "no index.html in the web directory: the dashboard is not served (set INSIGHTS_WEB_DIR)");
    dir.to_path_buf()
}

/// `GET /` and `GET /static/...`.
pub fn routes(dir: &Path) -> BoxedFilter<(Response,)> {
    let dir = resolve(dir);
    let dir = dir.as_path();
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
