//! The streamed export of interactions (R15.9): CSV or NDJSON from a PostgreSQL cursor, in constant memory.

use std::collections::HashMap;

use bytes::{BufMut as _, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use warp::Filter;
use warp::Reply as _;
use warp::http::Method;
use warp::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use warp::reply::Response;

use super::openapi::params::{ExportFormatParam, FilterParams, InteractionSortParams};
use super::params::{self, Params};
use super::{Endpoint, Shared, authed, query_map, respond_with};
use crate::auth::Principal;
use crate::domain::interaction::{InteractionRecord, InteractionView};
use crate::domain::{OrganizationId, Role};
use crate::error::Error;
use crate::store::filter::InteractionFilter;
use crate::store::listing::{self, InteractionSort};

pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let s = state.clone();
    let export = warp::path!("api" / "v1" / "export" / "interactions")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(export(&s, &p, &q).await)
        });
    vec![Endpoint::new(Method::GET, "/api/v1/export/interactions", export)]
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
    let mut p = Params::new(query);
    let filter = params::filter(&mut p);
    let (sort, descending) = params::sort(&mut p);
    let format = p
        .parse("format", |raw| {
            ExportFormat::ALL
                .into_iter()
                .find(|f| f.as_str() == raw)
                .ok_or_else(|| "must be csv or ndjson".to_owned())
        })
        .unwrap_or(ExportFormat::Csv);
    p.finish()?;
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
}
