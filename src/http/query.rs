//! Reading interactions in bulk: the filters shared by the listing, the summaries and the export; the
//! dashboard and trends, cached per organization data version; listing cursors; the streamed export.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut as _, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use warp::Filter;
use warp::Reply as _;
use warp::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::openapi::params::{
    DashboardIntervalParam, ExportFormatParam, FilterParams, InteractionSortParams, TrendsIntervalParam,
};
use super::{Endpoint, Shared, authed, query_map, respond_with};
use crate::auth::Principal;
use crate::domain::interaction::{Channel, InteractionRecord, InteractionView};
use crate::domain::validation::NUL_MESSAGE;
use crate::domain::{CustomerId, FieldError, OrganizationId, Role};
use crate::error::Error;
use crate::store::filter::InteractionFilter;
use crate::store::insights::{self, Dashboard, Interval, Trends};
use crate::store::listing::{self, InteractionSort, SortKey};
use crate::store::rollups::Range;

pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let s = state.clone();
    let dashboard = warp::path!("api" / "v1" / "insights" / "dashboard")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(dashboard(&s, &p, &q).await)
        });
    let trends = warp::path!("api" / "v1" / "insights" / "trends")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(trends(&s, &p, &q).await)
        });
    let export = warp::path!("api" / "v1" / "export" / "interactions")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(export(&s, &p, &q).await)
        });
    vec![
        Endpoint::new(Method::GET, "/api/v1/insights/dashboard", dashboard),
        Endpoint::new(Method::GET, "/api/v1/insights/trends", trends),
        Endpoint::new(Method::GET, "/api/v1/export/interactions", export),
    ]
}

/// Longest accepted full-text query, in characters once trimmed.
pub const MAX_TEXT_QUERY_CHARS: usize = 200;

/// The values of `order`: ascending, or descending (the default).
pub const ORDERS: [&str; 2] = ["asc", "desc"];

/// Reads the filters every interaction query accepts (R5.1–5.4), collecting an error for each bad one.
pub fn parse_filter(query: &HashMap<String, String>, errors: &mut Vec<FieldError>) -> InteractionFilter {
    let text = |name: &str| query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let list = |name: &str| -> Vec<&str> {
        text(name)
            .map(|v| v.split(',').map(str::trim).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default()
    };
    let mut time = |name: &str| {
        text(name).and_then(|v| match DateTime::parse_from_rfc3339(v) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errors.push(FieldError::new(
                    name,
                    "must be an RFC 3339 date-time with offset, such as 2026-11-30T00:00:00Z",
                ));
                None
            }
        })
    };
    let from = time("from");
    let to = time("to");
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.push(FieldError::new("from", "must be before to"));
    }
    let mut channels = Vec::new();
    for c in list("channels") {
        match Channel::parse(c) {
            Ok(c) => channels.push(c),
            Err(m) => errors.push(FieldError::new("channels", format!("{c:?} {m}"))),
        }
    }
    channels.sort_by_key(|c| c.as_str());
    channels.dedup();
    // Read as f64 and then narrowed: read as f32, a value just outside the range (1.0000001) would round
    // into it and be accepted.
    let mut score = |name: &str| {
        text(name).and_then(|v| match v.parse::<f64>() {
            Ok(x) if (-1.0..=1.0).contains(&x) => Some(x as f32),
            _ => {
                errors.push(FieldError::new(name, "must be a number from -1 to 1"));
                None
            }
        })
    };
    let sentiment_min = score("sentimentMin");
    let sentiment_max = score("sentimentMax");
    if let (Some(min), Some(max)) = (sentiment_min, sentiment_max)
        && min > max
    {
        errors.push(FieldError::new(
            "sentimentMin",
            "must not be greater than sentimentMax",
        ));
    }
    let mut segments: Vec<String> = list("segments").into_iter().map(str::to_owned).collect();
    segments.sort();
    segments.dedup();
    let customer = text("customerId").and_then(|v| match CustomerId::parse(v) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError::new("customerId", "must be a UUID"));
            None
        }
    });
    let q = text("q").map(str::to_owned);
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > MAX_TEXT_QUERY_CHARS)
    {
        errors.push(FieldError::new(
            "q",
            format!("must be at most {MAX_TEXT_QUERY_CHARS} characters"),
        ));
    }
    // PostgreSQL cannot compare text holding U+0000: refused here rather than failing in the query.
    for name in ["q", "segments"] {
        if query.get(name).is_some_and(|v| v.contains('\0')) {
            errors.push(FieldError::new(name, NUL_MESSAGE));
        }
    }
    InteractionFilter {
        from,
        to,
        channels,
        sentiment_min,
        sentiment_max,
        segments,
        customer,
        text: q,
    }
}

/// Reads `sort` (default timestamp) and `order` (default desc).
pub fn parse_sort(query: &HashMap<String, String>, errors: &mut Vec<FieldError>) -> (InteractionSort, bool) {
    let text = |name: &str| query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let sort = match text("sort") {
        None => InteractionSort::Timestamp,
        Some(v) => InteractionSort::parse(v).unwrap_or_else(|m| {
            errors.push(FieldError::new("sort", m));
            InteractionSort::Timestamp
        }),
    };
    let descending = match text("order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            errors.push(FieldError::new("order", "must be asc or desc"));
            true
        }
    };
    (sort, descending)
}

/// What a listing cursor carries: where the last page ended, in which order, and for which filters.
#[derive(Debug, Serialize, Deserialize)]
struct CursorBody {
    /// Sort key and id of the last row returned.
    p: SortKey,
    /// Descending?
    d: bool,
    /// Fingerprint of the filters, so a cursor is not silently applied to another query.
    f: String,
}

fn fingerprint(filter: &InteractionFilter) -> String {
    let digest = Sha256::digest(format!("{filter:?}").as_bytes());
    hex::encode(&digest[..8])
}

/// Makes the cursor that resumes after `last`.
pub fn encode_cursor(
    filter: &InteractionFilter,
    sort: InteractionSort,
    descending: bool,
    last: &InteractionRecord,
) -> String {
    let body = CursorBody {
        p: SortKey::of(sort, last),
        d: descending,
        f: fingerprint(filter),
    };
    // Serializing plain data to JSON cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

/// Reads a cursor, checking that it was issued for this sort, order and filters.
pub fn decode_cursor(
    raw: &str,
    filter: &InteractionFilter,
    sort: InteractionSort,
    descending: bool,
) -> Result<SortKey, String> {
    let body: CursorBody = URL_SAFE_NO_PAD
        .decode(raw.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| "is not a cursor returned by this API".to_owned())?;
    if body.p.sort() != sort || body.d != descending {
        return Err(
            "was issued for another sort or order; repeat the sort and order of the first page".to_owned(),
        );
    }
    if body.f != fingerprint(filter) {
        return Err("was issued for other filters; repeat the filters of the first page".to_owned());
    }
    Ok(body.p)
}

/// Reads the summary range: `to` defaults to now, `from` to `default_range` before `to`.
fn summary_range(filter: &InteractionFilter, default_range: Duration) -> Range {
    let to = filter.to.unwrap_or_else(Utc::now);
    let back = chrono::Duration::from_std(default_range).unwrap_or(chrono::Duration::days(30));
    let from = filter.from.unwrap_or(to - back);
    Range { from, to }
}

/// Reads `interval` (`default` when absent) and checks the number of buckets.
fn parse_interval(
    query: &HashMap<String, String>,
    range: Range,
    default: Interval,
    max_buckets: usize,
    errors: &mut Vec<FieldError>,
) -> Interval {
    let interval = match query.get("interval").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => default,
        Some(v) => match Interval::parse(v) {
            Ok(i) => i,
            Err(m) => {
                errors.push(FieldError::new("interval", m));
                return default;
            }
        },
    };
    let buckets = interval.buckets(range.from, range.to);
    if range.from < range.to && buckets > max_buckets as i64 {
        errors.push(FieldError::new(
            "interval",
            format!(
                "makes {buckets} buckets over this range, more than the limit of {max_buckets}; choose a coarser interval or a shorter range"
            ),
        ));
    }
    interval
}

/// The response of a cached endpoint (R14.3–14.5, R14.7): the cached JSON when the organization's data has
/// not changed since it was computed, or when it changed but the entry is younger than `fresh_within`
/// (`summary_fresh_within` for summaries; zero for what must read its own writes) (so a write is seen within that time, and an organization that writes all the
/// time still gets hits: one recomputation per period per entry, not one per write); else `compute`,
/// stored for `ttl`. `X-Cache` says which.
pub(crate) async fn cached<T, F, Fut>(
    s: &Shared,
    org: OrganizationId,
    endpoint: &'static str,
    params: &str,
    ttl: Duration,
    fresh_within: Duration,
    compute: F,
) -> Result<Response, Error>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    // The version is read before the data: a write that commits meanwhile changes the version after
    // its commit, so what is stored under this version can only be older than the next version.
    let version = s.cache.data_version(org).await;
    let key = summary_key(endpoint, org, params);
    let now = Utc::now().timestamp_millis();
    let fresh_ms = fresh_within.as_millis() as i64;
    if let Some(entry) = s.cache.get(&key).await
        && let Some((stored_version, at, body)) = unframe(&entry)
        && (stored_version == version || (0..fresh_ms).contains(&(now - at)))
    {
        s.metrics
            .summary_cache
            .with_label_values(&[endpoint, "hit"])
            .inc();
        return Ok(json_response(body.to_owned(), "hit"));
    }
    s.metrics
        .summary_cache
        .with_label_values(&[endpoint, "miss"])
        .inc();
    let value = compute().await?;
    let body = serde_json::to_string(&value).map_err(|e| Error::Internal(e.into()))?;
    s.cache.set(&key, &frame(&version, now, &body), ttl).await;
    Ok(json_response(body, "miss"))
}

/// A cache entry: the data version it was computed under, when (Unix milliseconds), and the JSON.
fn frame(version: &str, at_ms: i64, body: &str) -> String {
    format!("{version}\n{at_ms}\n{body}")
}

fn unframe(entry: &str) -> Option<(&str, i64, &str)> {
    let mut parts = entry.splitn(3, '\n');
    let version = parts.next()?;
    let at = parts.next()?.parse().ok()?;
    Some((version, at, parts.next()?))
}

/// `{endpoint}:{organization}:{hash(params)}` (R14.8); the hash covers the build, so a new release never
/// reads an old entry. The data version is inside the entry ([`frame`]), not in the key, so an
/// organization's writes replace its entries instead of piling up new ones.
pub fn summary_key(endpoint: &str, org: OrganizationId, params: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update([0]);
    hasher.update(params.as_bytes());
    let digest = hasher.finalize();
    format!("{endpoint}:{}:{}", org.as_uuid(), hex::encode(&digest[..16]))
}

fn json_response(body: String, cache: &'static str) -> Response {
    let mut r = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-cache", HeaderValue::from_static(cache));
    r
}

/// The dashboard: totals, channels, sentiment distribution, volume over time and the most negative
/// customers, for the filters and range given (default: the last 30 days). Cached 5 minutes (R8.6).
#[utoipa::path(get, path = "/api/v1/insights/dashboard", tag = "insights", security(("bearer" = [])),
    params(FilterParams, DashboardIntervalParam),
    responses((status = 200, body = Dashboard, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 400, body = super::errors::ErrorBody)))]
pub async fn dashboard(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Response, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let q = &s.config.query;
    let mut errors = Vec::new();
    let filter = parse_filter(query, &mut errors);
    let range = summary_range(&filter, q.default_range);
    let default = Interval::for_range(range.to - range.from);
    let interval = parse_interval(query, range, default, q.max_buckets, &mut errors);
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let params = format!("{filter:?}|{interval:?}|{}", q.top_customers);
    cached(
        s,
        org,
        "dashboard",
        &params,
        q.dashboard_cache_ttl,
        q.summary_fresh_within,
        || async {
            // The range is resolved when computed, so a default range is "the last 30 days" as of then.
            let range = summary_range(&filter, q.default_range);
            insights::dashboard(&s.pool, org, &filter, range, interval, q.top_customers).await
        },
    )
    .await
}

/// Sentiment over time: counts, labels and the average score per hour, day or week, for the filters
/// given. Cached 15 minutes (R8.8).
#[utoipa::path(get, path = "/api/v1/insights/trends", tag = "insights", security(("bearer" = [])),
    params(FilterParams, TrendsIntervalParam),
    responses((status = 200, body = Trends, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 400, body = super::errors::ErrorBody)))]
pub async fn trends(s: &Shared, p: &Principal, query: &HashMap<String, String>) -> Result<Response, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let q = &s.config.query;
    let mut errors = Vec::new();
    let filter = parse_filter(query, &mut errors);
    let range = summary_range(&filter, q.default_range);
    // Days, unless the range is too long for them.
    let default = if Interval::Day.buckets(range.from, range.to) > q.max_buckets as i64 {
        Interval::Week
    } else {
        Interval::Day
    };
    let interval = parse_interval(query, range, default, q.max_buckets, &mut errors);
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let params = format!("{filter:?}|{interval:?}");
    cached(
        s,
        org,
        "trends",
        &params,
        q.trends_cache_ttl,
        q.summary_fresh_within,
        || async {
            let range = summary_range(&filter, q.default_range);
            insights::trends(&s.pool, org, &filter, range, interval).await
        },
    )
    .await
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

impl ExportFormat {
    /// Every format; the first is the default.
    pub const ALL: [ExportFormat; 2] = [Self::Csv, Self::Ndjson];

    /// Returns the API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 17] = [
    "id",
    "customerId",
    "channel",
    "eventType",
    "timestamp",
    "content",
    "segment",
    "sentimentLabel",
    "sentimentScore",
    "positive",
    "negative",
    "neutral",
    "confidence",
    "processedAt",
    "createdAt",
    "metadata",
    "enrichment",
];

/// Streams every interaction matching the filters, as CSV or NDJSON, from a PostgreSQL cursor: memory
/// stays constant whatever the size (R15.9), and a client that stops reading stops the query.
#[utoipa::path(get, path = "/api/v1/export/interactions", tag = "interactions", security(("bearer" = [])),
    params(ExportFormatParam, FilterParams, InteractionSortParams),
    responses(
        (status = 200, description = "every matching interaction, streamed: CSV with a header row, or one JSON \
            object per line in the listing's shape; sent as an attachment",
            content((String = "text/csv"), (String = "application/x-ndjson")),
            headers(("content-disposition" = String, description = "attachment, with a file name"))),
        (status = 400, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody),
        (status = 503, description = "too many exports are running (`export_max_concurrent`), or the database \
            is unavailable", body = super::errors::ErrorBody)))]
pub async fn export(s: &Shared, p: &Principal, query: &HashMap<String, String>) -> Result<Response, Error> {
    let org = p.require(Role::Analyst)?.organization_id;
    let mut errors = Vec::new();
    let filter = parse_filter(query, &mut errors);
    let (sort, descending) = parse_sort(query, &mut errors);
    let format = match query.get("format").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => ExportFormat::Csv,
        Some(raw) => ExportFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == raw)
            .unwrap_or_else(|| {
                errors.push(FieldError::new("format", "must be csv or ndjson"));
                ExportFormat::Csv
            }),
    };
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let permit = s
        .exports
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded("too many exports are running; retry shortly"))?;
    // The connection is taken before answering, so an unreachable database is a 503, not a cut stream.
    let conn = s.pool.acquire().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_BUFFERED);
    let job = ExportJob {
        org,
        filter,
        sort,
        descending,
        format,
        fetch: s.config.query.export_fetch_rows,
        metrics: s.metrics.clone(),
    };
    tokio::spawn(async move {
        let _permit = permit;
        job.run(conn, tx).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = warp::reply::stream(stream).into_response();
    let (content_type, extension) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let name = format!(
        "attachment; filename=\"interactions-{}.{extension}\"",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Chunks of `export_fetch_rows` rows waiting for a slow client; the cursor is not read further until
/// one is sent, which is what keeps an export's memory constant.
const EXPORT_CHUNKS_BUFFERED: usize = 2;

struct ExportJob {
    org: OrganizationId,
    filter: InteractionFilter,
    sort: InteractionSort,
    descending: bool,
    format: ExportFormat,
    fetch: usize,
    metrics: crate::metrics::Metrics,
}

/// Why an export stopped early.
enum Stop {
    /// The client went away.
    Gone,
    Failed(String),
}

impl ExportJob {
    async fn run(
        self,
        conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let format = self.format.as_str();
        let started = std::time::Instant::now();
        match self.stream(conn, &tx).await {
            Ok(rows) => {
                self.metrics
                    .exports
                    .with_label_values(&[format, "completed"])
                    .inc();
                tracing::info!(org = %self.org, format, rows, ms = started.elapsed().as_millis() as u64, "export completed");
            }
            Err(Stop::Gone) => {
                self.metrics.exports.with_label_values(&[format, "aborted"]).inc();
                tracing::info!(org = %self.org, format, "export stopped: the client went away");
            }
            Err(Stop::Failed(e)) => {
                self.metrics.exports.with_label_values(&[format, "failed"]).inc();
                tracing::error!(org = %self.org, format, error = %e, "export failed");
                // The status is already sent: an error in the body stream makes the server cut the
                // response, so the client sees an incomplete transfer rather than a short file.
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
    }

    /// Reads the cursor in a read-only snapshot and sends the formatted chunks; returns the row count.
    async fn stream(
        &self,
        mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<u64, Stop> {
        let failed = |e: sqlx::Error| Stop::Failed(e.to_string());
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        let result = self.fetch_all(&mut conn, tx).await;
        // Ending the transaction closes the cursor; the connection goes back to the pool clean.
        if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            conn.close_on_drop();
        }
        result
    }

    async fn fetch_all(
        &self,
        conn: &mut sqlx::PgConnection,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<u64, Stop> {
        let failed = |e: sqlx::Error| Stop::Failed(e.to_string());
        let mut declare = listing::export_cursor(
            "export_cursor",
            self.org,
            &self.filter,
            self.sort,
            self.descending,
        );
        declare.build().execute(&mut *conn).await.map_err(failed)?;
        let fetch = format!("FETCH FORWARD {} FROM export_cursor", self.fetch);
        let mut rows_sent: u64 = 0;
        if self.format == ExportFormat::Csv {
            let mut header = csv_writer(Vec::new());
            header
                .write_record(CSV_HEADER)
                .map_err(|e| Stop::Failed(e.to_string()))?;
            let bytes = header.into_inner().map_err(|e| Stop::Failed(e.to_string()))?;
            tx.send(Ok(Bytes::from(bytes))).await.map_err(|_| Stop::Gone)?;
        }
        loop {
            // The statement is built from a number in our configuration, never from request text.
            let rows: Vec<InteractionRecord> = sqlx::query_as(sqlx::AssertSqlSafe(fetch.as_str()))
                .fetch_all(&mut *conn)
                .await
                .map_err(failed)?;
            if rows.is_empty() {
                return Ok(rows_sent);
            }
            let n = rows.len() as u64;
            let chunk = match self.format {
                ExportFormat::Csv => csv_chunk(rows)?,
                ExportFormat::Ndjson => ndjson_chunk(rows)?,
            };
            tx.send(Ok(chunk)).await.map_err(|_| Stop::Gone)?;
            rows_sent += n;
            self.metrics.export_rows.inc_by(n);
        }
    }
}

fn csv_writer<W: std::io::Write>(w: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().has_headers(false).from_writer(w)
}

/// A text cell that a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice for
/// CSV injection); every other value is written as is.
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn csv_chunk(rows: Vec<InteractionRecord>) -> Result<Bytes, Stop> {
    let mut w = csv_writer(Vec::with_capacity(rows.len() * 256));
    let num = |x: Option<f32>| x.map(|v| v.to_string()).unwrap_or_default();
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    for r in rows {
        let record = [
            r.id.to_string(),
            r.customer_id.to_string(),
            r.channel.as_str().to_owned(),
            cell(&r.event_type).into_owned(),
            r.occurred_at.to_rfc3339(),
            r.content
                .as_deref()
                .map(|c| cell(c).into_owned())
                .unwrap_or_default(),
            r.segment
                .as_deref()
                .map(|c| cell(c).into_owned())
                .unwrap_or_default(),
            r.sentiment_label.clone().unwrap_or_default(),
            num(r.sentiment_score),
            num(r.sentiment_positive),
            num(r.sentiment_negative),
            num(r.sentiment_neutral),
            num(r.sentiment_confidence),
            time(r.processed_at),
            r.created_at.to_rfc3339(),
            r.metadata,
            r.enrichment,
        ];
        w.write_record(&record).map_err(|e| Stop::Failed(e.to_string()))?;
    }
    w.into_inner()
        .map(Bytes::from)
        .map_err(|e| Stop::Failed(e.to_string()))
}

fn ndjson_chunk(rows: Vec<InteractionRecord>) -> Result<Bytes, Stop> {
    let mut out = BytesMut::with_capacity(rows.len() * 512);
    for r in rows {
        let view = InteractionView::from(r);
        let line = serde_json::to_vec(&view).map_err(|e| Stop::Failed(e.to_string()))?;
        out.put_slice(&line);
        out.put_u8(b'\n');
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equal_filters_are_canonical_whatever_the_order_of_their_lists() {
        let mut errors = Vec::new();
        let a = parse_filter(
            &q(&[("channels", "chat,email"), ("segments", "b, a,a")]),
            &mut errors,
        );
        let b = parse_filter(
            &q(&[("channels", "email, chat,chat"), ("segments", "a,b")]),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(a, b);
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn every_bad_filter_is_reported() {
        let mut errors = Vec::new();
        parse_filter(
            &q(&[
                ("from", "yesterday"),
                ("channels", "fax"),
                ("sentimentMin", "2"),
                ("customerId", "x"),
                ("q", &"a".repeat(201)),
            ]),
            &mut errors,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["from", "channels", "sentimentMin", "customerId", "q"]);
        let mut errors = Vec::new();
        parse_filter(
            &q(&[("from", "2026-02-01T00:00:00Z"), ("to", "2026-01-01T00:00:00Z")]),
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("before"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_another_query() {
        let record = InteractionRecord {
            id: crate::domain::InteractionId(uuid::Uuid::from_u128(7)),
            organization_id: OrganizationId(uuid::Uuid::from_u128(1)),
            customer_id: CustomerId(uuid::Uuid::from_u128(2)),
            channel: Channel::Chat,
            event_type: "message".to_owned(),
            content: None,
            occurred_at: Utc::now(),
            metadata: "{}".to_owned(),
            enrichment: "{}".to_owned(),
            segment: None,
            idempotency_key: None,
            sentiment_positive: None,
            sentiment_negative: None,
            sentiment_neutral: None,
            sentiment_score: Some(-0.25),
            sentiment_label: None,
            sentiment_confidence: None,
            processed_at: None,
            created_at: Utc::now(),
        };
        let filter = InteractionFilter::default();
        for sort in [
            InteractionSort::Timestamp,
            InteractionSort::Sentiment,
            InteractionSort::Channel,
            InteractionSort::CreatedAt,
        ] {
            let c = encode_cursor(&filter, sort, true, &record);
            assert_eq!(
                decode_cursor(&c, &filter, sort, true).unwrap(),
                SortKey::of(sort, &record)
            );
            assert!(decode_cursor(&c, &filter, sort, false).is_err(), "another order");
        }
        let c = encode_cursor(&filter, InteractionSort::Timestamp, true, &record);
        assert!(decode_cursor(&c, &filter, InteractionSort::Sentiment, true).is_err());
        let other = InteractionFilter {
            channels: vec![Channel::Web],
            ..InteractionFilter::default()
        };
        assert!(decode_cursor(&c, &other, InteractionSort::Timestamp, true).is_err());
        assert!(decode_cursor("not-a-cursor", &filter, InteractionSort::Timestamp, true).is_err());
    }

    #[test]
    fn formula_cells_are_neutralized_and_quoting_is_csv() {
        assert_eq!(cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("fine"), "fine");
        let mut w = csv_writer(Vec::new());
        w.write_record(["a,b", "say \"hi\"", "line\nbreak"]).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner().unwrap()).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\n"
        );
    }

    #[test]
    fn summary_keys_are_scoped_and_entries_carry_their_version() {
        let org = OrganizationId(uuid::Uuid::from_u128(1));
        let other = OrganizationId(uuid::Uuid::from_u128(2));
        let k = summary_key("dashboard", org, "p");
        assert!(k.starts_with(&format!("dashboard:{}:", org.as_uuid())), "{k}");
        assert_ne!(k, summary_key("dashboard", other, "p"));
        assert_ne!(k, summary_key("dashboard", org, "q"));
        assert_ne!(k, summary_key("trends", org, "p"));
        assert_eq!(k, summary_key("dashboard", org, "p"));
        let entry = frame("v1", 1_700_000_000_000, "{\"a\":\"x\\ny\"}\n");
        assert_eq!(
            unframe(&entry),
            Some(("v1", 1_700_000_000_000, "{\"a\":\"x\\ny\"}\n"))
        );
        assert_eq!(unframe("no frame"), None);
        assert_eq!(unframe("v\nnot-a-time\n{}"), None);
    }
}
