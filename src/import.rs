//! `insights import FILE`: bulk import of interactions from NDJSON or CSV, streamed in constant memory.
//!
//! A reader thread parses rows and hands them over a bounded channel (so a slow database slows the reader,
//! never grows memory); at most four chunks are stored at once; rows are validated exactly like the API's, resolved to customers, and stored in
//! transactions of `batch_chunk` through the same code as `POST /api/v1/interactions/batch`. Every
//! rejected row goes to a side file with its line number and errors: nothing is dropped silently.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::config::Config;
use crate::domain::enrichment::OrgContext;
use crate::domain::interaction::{IngestOutcome, NewInteraction, parse_new_interaction};
use crate::domain::{CustomerId, FieldError, OrganizationId};
use crate::store::cache::Cache;
use crate::store::interactions::{self, ItemOutcome};
use crate::store::org_tx::OrgTx;

/// The file formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, with the fields of `POST /api/v1/interactions`.
    Ndjson,
    /// A header row naming the same fields; `metadata` holds a JSON object as text.
    Csv,
}

impl Format {
    /// Guesses the format from the file name (`.csv` is CSV, anything else NDJSON).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Self::Csv,
            _ => Self::Ndjson,
        }
    }
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub file: PathBuf,
    pub organization: OrganizationId,
    pub format: Format,
    /// Where rejected rows go (default: `<file>.rejects.ndjson`).
    pub rejects: PathBuf,
    /// Create customers named by `customerExternalId` that do not exist yet.
    pub create_customers: bool,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub rows: u64,
    pub created: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub customers_created: u64,
    pub elapsed_ms: u64,
    pub rejects_file: Option<String>,
}

/// One row as read from the file.
struct Row {
    line: u64,
    raw: String,
    parsed: Result<Value, String>,
}

/// How many rows may wait between the reader and the database.
const CHANNEL_ROWS: usize = 2048;
/// Chunks being stored at once (each in its own transaction; ordered locking keeps them deadlock-free).
const CHUNKS_IN_FLIGHT: usize = 4;
/// How often progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Customers remembered by external id; the map is cleared beyond this so memory stays bounded.
const CUSTOMER_CACHE: usize = 100_000;

/// Runs an import to the end and returns its summary.
pub async fn run(pool: &PgPool, config: &Config, opts: &ImportOptions) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let name = interactions::org_name(pool, opts.organization)
        .await?
        .ok_or_else(|| anyhow::anyhow!("organization {} does not exist", opts.organization))?;
    let org = OrgContext {
        id: opts.organization,
        name,
    };
    let file = std::fs::File::open(&opts.file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", opts.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Row>(CHANNEL_ROWS);
    let reader = {
        let read_bytes = read_bytes.clone();
        let format = opts.format;
        tokio::task::spawn_blocking(move || read_rows(file, format, &tx, &read_bytes))
    };
    let mut rejects = RejectWriter::new(opts.rejects.clone());
    let bar = progress_bar(opts.progress, total_bytes);
    let limits = config.ingest.limits();
    let mut customers: HashMap<String, CustomerId> = HashMap::new();
    let mut summary = ImportSummary::default();
    let mut chunk: Vec<(usize, NewInteraction)> = Vec::with_capacity(config.ingest.batch_chunk);
    let mut chunk_rows: Vec<(u64, String)> = Vec::with_capacity(config.ingest.batch_chunk);
    let mut last_log = Instant::now();
    let mut in_flight = FuturesOrdered::new();
    // Summaries cached by running nodes (through Redis) are invalidated as chunks commit (`OrgTx`).
    let cache = Cache::open(config, crate::metrics::Metrics::new()?).await?;

    while let Some(row) = rx.recv().await {
        summary.rows += 1;
        let value = match row.parsed {
            Ok(v) => v,
            Err(e) => {
                rejects.write(row.line, &row.raw, &[FieldError::new("", e)])?;
                summary.rejected += 1;
                continue;
            }
        };
        let value = match resolve_customer(
            pool,
            &cache,
            &org,
            value,
            opts.create_customers,
            &mut customers,
            &mut summary,
        )
        .await
        {
            Ok(v) => v,
            Err(errors) => {
                rejects.write(row.line, &row.raw, &errors)?;
                summary.rejected += 1;
                continue;
            }
        };
        match parse_new_interaction(&value, chrono::Utc::now(), limits) {
            Ok(new) => {
                chunk.push((chunk.len(), new));
                chunk_rows.push((row.line, row.raw));
            }
            Err(errors) => {
                rejects.write(row.line, &row.raw, &errors)?;
                summary.rejected += 1;
            }
        }
        if chunk.len() >= config.ingest.batch_chunk {
            let (items, rows) = (std::mem::take(&mut chunk), std::mem::take(&mut chunk_rows));
            in_flight.push_back(store(pool.clone(), cache.clone(), org.clone(), items, rows));
            if in_flight.len() >= CHUNKS_IN_FLIGHT
                && let Some((outcomes, rows)) = in_flight.next().await
            {
                record(outcomes?, &rows, &mut rejects, &mut summary)?;
            }
        }
        bar.set_position(read_bytes.load(Ordering::Relaxed));
        bar.set_message(format!("{} rows, {} rejected", summary.rows, summary.rejected));
        if last_log.elapsed() >= LOG_EVERY {
            log_progress(&summary, started, read_bytes.load(Ordering::Relaxed), total_bytes);
            last_log = Instant::now();
        }
    }
    if !chunk.is_empty() {
        in_flight.push_back(store(pool.clone(), cache.clone(), org.clone(), chunk, chunk_rows));
    }
    while let Some((outcomes, rows)) = in_flight.next().await {
        record(outcomes?, &rows, &mut rejects, &mut summary)?;
    }
    reader.await??;
    bar.finish_and_clear();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.rejects_file = rejects.finish()?;
    log_progress(&summary, started, total_bytes, total_bytes);
    Ok(summary)
}

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} | {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn log_progress(summary: &ImportSummary, started: Instant, read: u64, total: u64) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = summary.rows as f64 / secs;
    let percent = if total > 0 {
        read as f64 * 100.0 / total as f64
    } else {
        100.0
    };
    let eta_s = if read > 0 && total > read {
        (total - read) as f64 * secs / read as f64
    } else {
        0.0
    };
    tracing::info!(
        rows = summary.rows,
        created = summary.created,
        duplicates = summary.duplicates,
        rejected = summary.rejected,
        percent = format!("{percent:.1}"),
        rows_per_s = rate.round() as u64,
        eta_s = eta_s.round() as u64,
        "import progress"
    );
}

/// Stores one chunk; returns its outcomes with the rows they came from.
async fn store(
    pool: PgPool,
    cache: Cache,
    org: OrgContext,
    chunk: Vec<(usize, NewInteraction)>,
    rows: Vec<(u64, String)>,
) -> (
    Result<Vec<(usize, ItemOutcome)>, crate::error::Error>,
    Vec<(u64, String)>,
) {
    (
        interactions::store_chunk(&pool, &cache, &org, chunk, None).await,
        rows,
    )
}

/// Counts a stored chunk's outcomes and writes its failed rows to the rejects file.
fn record(
    outcomes: Vec<(usize, ItemOutcome)>,
    rows: &[(u64, String)],
    rejects: &mut RejectWriter,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    for (index, outcome) in outcomes {
        match outcome {
            ItemOutcome::Stored(stored) => match *stored {
                IngestOutcome::Created(_) => summary.created += 1,
                IngestOutcome::Duplicate(_) => summary.duplicates += 1,
            },
            ItemOutcome::Failed(errors) => {
                let (line, raw) = rows.get(index).map(|(l, r)| (*l, r.as_str())).unwrap_or((0, ""));
                rejects.write(line, raw, &errors)?;
                summary.rejected += 1;
            }
        }
    }
    Ok(())
}

/// Fills `customerId` from `customerExternalId` when the row names the customer that way.
async fn resolve_customer(
    pool: &PgPool,
    data_cache: &Cache,
    org: &OrgContext,
    mut value: Value,
    create: bool,
    known: &mut HashMap<String, CustomerId>,
    summary: &mut ImportSummary,
) -> Result<Value, Vec<FieldError>> {
    let Some(object) = value.as_object_mut() else {
        return Err(vec![FieldError::new("", "row must be a JSON object")]);
    };
    if object.get("customerId").is_some_and(|v| !v.is_null()) {
        return Ok(value);
    }
    let Some(external) = object
        .get("customerExternalId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(value);
    };
    let external = external.to_owned();
    let id = match known.get(&external) {
        Some(id) => *id,
        None => {
            let found = crate::store::customers::id_by_external_id(pool, org.id, &external)
                .await
                .map_err(|e| vec![FieldError::new("customerExternalId", e.to_string())])?;
            let id = match (found, create) {
                (Some(id), _) => id,
                (None, true) => {
                    let created = create_customer(pool, data_cache, org.id, &external).await?;
                    summary.customers_created += 1;
                    created
                }
                (None, false) => {
                    return Err(vec![FieldError::new(
                        "customerExternalId",
                        "no customer with this externalId (use --create-customers to create them)",
                    )]);
                }
            };
            if known.len() >= CUSTOMER_CACHE {
                known.clear();
            }
            known.insert(external, id);
            id
        }
    };
    object.insert("customerId".to_owned(), Value::String(id.to_string()));
    Ok(value)
}

async fn create_customer(
    pool: &PgPool,
    cache: &Cache,
    org: OrganizationId,
    external: &str,
) -> Result<CustomerId, Vec<FieldError>> {
    let external_id = crate::domain::customer::ExternalId::parse(external)
        .map_err(|m| vec![FieldError::new("customerExternalId", m)])?;
    let created = async {
        let mut tx = OrgTx::unowned(pool, cache, org).await?;
        let id = crate::store::customers::create_bare(&mut tx, &external_id).await?;
        tx.commit().await?;
        Ok::<_, crate::error::Error>(id)
    };
    match created.await {
        Ok(id) => Ok(id),
        // Created by someone else meanwhile: use theirs.
        Err(crate::error::Error::Conflict(_)) => {
            crate::store::customers::id_by_external_id(pool, org, external)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    vec![FieldError::new(
                        "customerExternalId",
                        "customer could not be created",
                    )]
                })
        }
        Err(e) => Err(vec![FieldError::new("customerExternalId", e.to_string())]),
    }
}

/// Reads the file row by row on a blocking thread, counting the bytes consumed for the progress bar.
fn read_rows(
    file: std::fs::File,
    format: Format,
    tx: &tokio::sync::mpsc::Sender<Row>,
    read_bytes: &AtomicU64,
) -> anyhow::Result<()> {
    let reader = std::io::BufReader::with_capacity(256 * 1024, file);
    match format {
        Format::Ndjson => {
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                read_bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                if line.trim().is_empty() {
                    continue;
                }
                let parsed = serde_json::from_str::<Value>(&line).map_err(|e| format!("not valid JSON: {e}"));
                if tx
                    .blocking_send(Row {
                        line: n as u64 + 1,
                        raw: line,
                        parsed,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
            let headers = csv.headers()?.clone();
            let mut record = csv::StringRecord::new();
            loop {
                let before = csv.position().byte();
                match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        read_bytes.fetch_add(csv.position().byte() - before, Ordering::Relaxed);
                        let line = record.position().map_or(0, csv::Position::line);
                        let raw = record.iter().collect::<Vec<_>>().join(",");
                        let parsed = csv_row(&headers, &record);
                        if tx.blocking_send(Row { line, raw, parsed }).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line);
                        let row = Row {
                            line,
                            raw: String::new(),
                            parsed: Err(format!("unreadable CSV row: {e}")),
                        };
                        if tx.blocking_send(row).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Turns a CSV record into the JSON object the API would receive; empty cells are absent.
fn csv_row(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Value, String> {
    let mut object = Map::new();
    for (name, cell) in headers.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let value = if name == "metadata" {
            serde_json::from_str(cell).map_err(|e| format!("metadata is not valid JSON: {e}"))?
        } else {
            Value::String(cell.to_owned())
        };
        object.insert(name.to_owned(), value);
    }
    Ok(Value::Object(object))
}

/// Writes rejected rows as NDJSON: `{"line": n, "errors": [...], "row": "..."}`; created on first use.
struct RejectWriter {
    path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl RejectWriter {
    fn new(path: PathBuf) -> Self {
        Self { path, out: None }
    }

    fn write(&mut self, line: u64, raw: &str, errors: &[FieldError]) -> anyhow::Result<()> {
        if self.out.is_none() {
            let file = std::fs::File::create(&self.path)
                .map_err(|e| anyhow::anyhow!("cannot create rejects file {}: {e}", self.path.display()))?;
            self.out = Some(std::io::BufWriter::new(file));
        }
        if let Some(out) = self.out.as_mut() {
            writeln!(out, "{}", json!({"line": line, "errors": errors, "row": raw}))?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Option<String>> {
        match self.out {
            Some(mut out) => {
                out.flush()?;
                Ok(Some(self.path.display().to_string()))
            }
            None => Ok(None),
        }
    }
}
