//! The query parameters of the listings, summaries and export, with the limits and names their parsers
//! use (`PageRequest::read`, `params::filter`, `params::sort`, ...). Used in the handlers' annotations as
//! `params(PageParams, ...)`.
//!
//! The interaction filters, their sort and the summaries' `interval` read a value that is blank once
//! trimmed as absent; their schemas say so (`anyOf` with a blank string).

use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use super::schemas::{or_blank, uuid};
use crate::domain::interaction::Channel;
use crate::domain::validation::{REFUSED_CONTROL_CLASS, WHITESPACE_CLASS};
use crate::http::PageRequest;
use crate::http::export::ExportFormat;
use crate::http::params::{MAX_TEXT_QUERY_CHARS, ORDERS};
use crate::store::customers::CustomerSort;
use crate::store::insights::Interval;
use crate::store::listing::InteractionSort;

fn query(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn names<const N: usize>(values: [&'static str; N]) -> ObjectBuilder {
    string().enum_values(Some(values))
}

/// `page` and `pageSize`.
pub struct PageParams;

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let integer = |max: u32, default: u32| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(max))
                .default(Some(default.into()))
        };
        vec![
            query(
                "page",
                &format!("from 1 to {}, default 1", PageRequest::MAX_PAGE),
                integer(PageRequest::MAX_PAGE, 1),
            ),
            query(
                "pageSize",
                &format!(
                    "1 to {}, default {}",
                    PageRequest::MAX_SIZE,
                    PageRequest::DEFAULT_SIZE
                ),
                integer(PageRequest::MAX_SIZE, PageRequest::DEFAULT_SIZE),
            ),
        ]
    }
}

/// The customer listing's `segment`, `q`, `sort` and `order` (read as given, not trimmed, except the
/// two texts).
pub struct CustomerListParams;

impl IntoParams for CustomerListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let sorts = CustomerSort::ALL.map(CustomerSort::as_str);
        vec![
            query(
                "segment",
                "exact segment; blank is the same as absent",
                stored_text(),
            ),
            query(
                "q",
                &format!(
                    "substring of externalId, name or email; at most {MAX_TEXT_QUERY_CHARS} characters once trimmed"
                ),
                text_query(),
            ),
            query(
                "sort",
                &format!("{} (default) or {}", sorts[0], sorts[1..].join(", ")),
                names(sorts),
            ),
            query("order", "asc or desc (default)", names(ORDERS)),
        ]
    }
}

/// A free-text query: at most [`MAX_TEXT_QUERY_CHARS`] characters once trimmed, no control character
/// but tab and line breaks.
fn text_query() -> ObjectBuilder {
    let (ws, cc) = (WHITESPACE_CLASS, REFUSED_CONTROL_CLASS);
    let between = MAX_TEXT_QUERY_CHARS - 2;
    string().pattern(Some(format!(
        "^[{ws}]*(?:[^{ws}{cc}](?:[^{cc}]{{0,{between}}}[^{ws}{cc}])?)?[{ws}]*$"
    )))
}

/// A text compared with stored ones: once trimmed, no control character but tab and line breaks.
fn stored_text() -> ObjectBuilder {
    let (ws, cc) = (WHITESPACE_CLASS, REFUSED_CONTROL_CLASS);
    string().pattern(Some(format!(
        "^[{ws}]*(?:[^{ws}{cc}](?:[^{cc}]*[^{ws}{cc}])?)?[{ws}]*$"
    )))
}

fn date_time() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

/// A comma-separated list of channel names; blank items are skipped.
fn channel_list() -> ObjectBuilder {
    let ws = WHITESPACE_CLASS;
    let names: Vec<&str> = Channel::ALL.iter().map(Channel::as_str).collect();
    let item = format!("[{ws}]*(?:{})?[{ws}]*", names.join("|"));
    string().pattern(Some(format!("^{item}(?:,{item})*$")))
}

fn score() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(-1.0))
        .maximum(Some(1.0))
}

/// The filters of every interaction query: listing, export, dashboard and trends (`params::filter`).
pub struct FilterParams;

impl IntoParams for FilterParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let channels: Vec<&str> = Channel::ALL.iter().map(Channel::as_str).collect();
        vec![
            query(
                "from",
                "RFC 3339 with offset; interactions at or after (summaries: default `to` minus 30 days); \
                 must be before `to`",
                or_blank(date_time()),
            ),
            query(
                "to",
                "RFC 3339 with offset; interactions before (summaries: default now)",
                or_blank(date_time()),
            ),
            query(
                "channels",
                &format!("comma-separated, of {}", channels.join(", ")),
                channel_list(),
            ),
            query(
                "sentimentMin",
                "score (positive − negative) at least, in [-1, 1]; not above `sentimentMax`",
                or_blank(score()),
            ),
            query("sentimentMax", "score at most, in [-1, 1]", or_blank(score())),
            query("segments", "comma-separated customer segments", stored_text()),
            query("customerId", "the customer's id", or_blank(uuid())),
            query(
                "q",
                &format!(
                    "full-text search in the content; at most {MAX_TEXT_QUERY_CHARS} characters once trimmed"
                ),
                text_query(),
            ),
        ]
    }
}

/// `sort` and `order` of the interaction listing and export (`params::sort`).
pub struct InteractionSortParams;

impl IntoParams for InteractionSortParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let sorts = InteractionSort::ALL.map(InteractionSort::as_str);
        vec![
            query(
                "sort",
                &format!("{} (default) or {}", sorts[0], sorts[1..].join(", ")),
                or_blank(names(sorts)),
            ),
            query("order", "asc or desc (default)", or_blank(names(ORDERS))),
        ]
    }
}

/// `cursor` of the interaction listing.
pub struct CursorParam;

impl IntoParams for CursorParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query(
            "cursor",
            "`pagination.nextCursor` of the previous page, with the same filters, sort and order (keyset \
             paging; not with `page`); any other value is refused",
            string(),
        )]
    }
}

fn interval(description: &str) -> Parameter {
    query(
        "interval",
        &format!("{description}; at most the node's `query_max_buckets` (1000) buckets over the range"),
        or_blank(names(Interval::ALL.map(Interval::as_str))),
    )
}

/// The dashboard's `interval`.
pub struct DashboardIntervalParam;

impl IntoParams for DashboardIntervalParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![interval(
            "hour, day or week for `volume`; default from the range (hours up to 2 days, days up to 90)",
        )]
    }
}

/// The trends' `interval`.
pub struct TrendsIntervalParam;

impl IntoParams for TrendsIntervalParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![interval("hour, day (default) or week")]
    }
}

/// The export's `format`.
pub struct ExportFormatParam;

impl IntoParams for ExportFormatParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query(
            "format",
            "csv (default) or ndjson",
            or_blank(names(ExportFormat::ALL.map(ExportFormat::as_str))),
        )]
    }
}
