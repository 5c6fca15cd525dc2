//! Reading query strings: one reader ([`Params`]) shaped like the body validator
//! (`domain::validation::Fields`), which collects every bad parameter so a 400 lists them all, and on it
//! the filters and sort every interaction query accepts (R5.1–5.4).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::interaction::Channel;
use crate::domain::validation::{control_message, refused_control};
use crate::domain::{CustomerId, FieldError};
use crate::error::Error;
use crate::store::filter::InteractionFilter;
use crate::store::listing::InteractionSort;

/// Longest accepted full-text query, in characters once trimmed.
pub const MAX_TEXT_QUERY_CHARS: usize = 200;

/// The values of `order`: ascending, or descending (the default).
pub const ORDERS: [&str; 2] = ["asc", "desc"];

/// Reads query parameters and accumulates what is wrong with them. A parameter that is absent or blank
/// (only whitespace) counts as absent.
pub struct Params<'a> {
    query: &'a HashMap<String, String>,
    errors: Vec<FieldError>,
}

impl<'a> Params<'a> {
    /// Starts reading `query`.
    pub fn new(query: &'a HashMap<String, String>) -> Self {
        Self {
            query,
            errors: Vec::new(),
        }
    }

    /// Whether the parameter was sent at all (even blank).
    pub fn has(&self, name: &str) -> bool {
        self.query.contains_key(name)
    }

    /// The trimmed value; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A text compared with stored text: at most `max_chars` characters once trimmed, and no control
    /// character but tab and line breaks (stored text holds none; PostgreSQL cannot even compare U+0000).
    pub fn search_text(&mut self, name: &str, max_chars: usize) -> Option<&'a str> {
        self.refuse_controls(name);
        let value = self.text(name)?;
        if value.chars().count() > max_chars {
            self.error(name, format!("must be at most {max_chars} characters"));
            return None;
        }
        Some(value)
    }

    /// Records an error when the trimmed value holds a control character free text may not hold.
    pub fn refuse_controls(&mut self, name: &str) {
        if let Some(c) = self.query.get(name).and_then(|v| refused_control(v.trim())) {
            self.error(name, control_message(c));
        }
    }

    /// A comma-separated list, items trimmed, empty items dropped.
    pub fn list(&self, name: &str) -> Vec<&'a str> {
        self.text(name)
            .map(|v| v.split(',').map(str::trim).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Runs `parse` on a present value and records its error under `name`.
    pub fn parse<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.text(name)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    /// An RFC 3339 date-time with an offset, in UTC.
    pub fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        self.parse(name, |v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    "must be an RFC 3339 date-time with offset, such as 2026-11-30T00:00:00Z".to_owned()
                })
        })
    }

    /// A sentiment score from -1 to 1. Read as f64 and then narrowed: read as f32, a value just outside the
    /// range (1.0000001) would round into it and be accepted.
    pub fn score(&mut self, name: &str) -> Option<f32> {
        self.parse(name, |v| match v.parse::<f64>() {
            Ok(x) if (-1.0..=1.0).contains(&x) => Ok(x as f32),
            _ => Err("must be a number from -1 to 1".to_owned()),
        })
    }

    /// An integer within `min..=max`.
    pub fn int_in(&mut self, name: &str, min: u32, max: u32) -> Option<u32> {
        // Not trimmed or defaulted when blank: `page=` is as wrong as `page=x`.
        let raw = self.query.get(name)?;
        match raw.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(name, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// `order`: `desc` (the default) or `asc`; true when descending.
    pub fn descending(&mut self) -> bool {
        match self.text("order") {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                self.error("order", "must be asc or desc");
                true
            }
        }
    }

    /// Records an error.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Ok when every parameter read was valid, else a 400 listing every error.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.errors))
        }
    }
}

/// Reads the filters every interaction query accepts (R5.1–5.4). Channels and segments come out sorted
/// and unique, so equal filters compare (and hash into cache keys) equal.
pub fn filter(p: &mut Params<'_>) -> InteractionFilter {
    let from = p.time("from");
    let to = p.time("to");
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        p.error("from", "must be before to");
    }
    let mut channels = Vec::new();
    for c in p.list("channels") {
        match Channel::parse(c) {
            Ok(c) => channels.push(c),
            Err(m) => p.error("channels", format!("{c:?} {m}")),
        }
    }
    channels.sort_by_key(|c| c.as_str());
    channels.dedup();
    let sentiment_min = p.score("sentimentMin");
    let sentiment_max = p.score("sentimentMax");
    if let (Some(min), Some(max)) = (sentiment_min, sentiment_max)
        && min > max
    {
        p.error("sentimentMin", "must not be greater than sentimentMax");
    }
    p.refuse_controls("segments");
    let mut segments: Vec<String> = p.list("segments").into_iter().map(str::to_owned).collect();
    segments.sort();
    segments.dedup();
    let customer = p.parse("customerId", |v| {
        CustomerId::parse(v).map_err(|_| "must be a UUID".to_owned())
    });
    let text = p.search_text("q", MAX_TEXT_QUERY_CHARS).map(str::to_owned);
    InteractionFilter {
        from,
        to,
        channels,
        sentiment_min,
        sentiment_max,
        segments,
        customer,
        text,
    }
}

/// Reads `sort` (default timestamp) and `order` (default desc).
pub fn sort(p: &mut Params<'_>) -> (InteractionSort, bool) {
    let sort = p.parse("sort", InteractionSort::parse).unwrap_or_default();
    (sort, p.descending())
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

    fn parse_filter(query: &HashMap<String, String>) -> (InteractionFilter, Vec<FieldError>) {
        let mut p = Params::new(query);
        let f = filter(&mut p);
        let errors = match p.finish() {
            Ok(()) => Vec::new(),
            Err(Error::Validation(e)) => e,
            Err(other) => panic!("{other:?}"),
        };
        (f, errors)
    }

    #[test]
    fn equal_filters_are_canonical_whatever_the_order_of_their_lists() {
        let (a, errors) = parse_filter(&q(&[("channels", "chat,email"), ("segments", "b, a,a")]));
        assert!(errors.is_empty(), "{errors:?}");
        let (b, errors) = parse_filter(&q(&[("channels", "email, chat,chat"), ("segments", "a,b")]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(a, b);
    }

    #[test]
    fn every_bad_parameter_is_reported_in_one_error() {
        let (_, errors) = parse_filter(&q(&[
            ("from", "yesterday"),
            ("channels", "fax"),
            ("sentimentMin", "2"),
            ("customerId", "x"),
            ("q", &"a".repeat(201)),
            ("segments", "a\0b"),
        ]));
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            ["channels", "customerId", "from", "q", "segments", "sentimentMin"]
        );
        let (_, errors) = parse_filter(&q(&[
            ("from", "2026-02-01T00:00:00Z"),
            ("to", "2026-01-01T00:00:00Z"),
        ]));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("before"));
        // Sort, order and paging errors join the filter errors.
        let query = q(&[
            ("sort", "size"),
            ("order", "up"),
            ("page", "0"),
            ("sentimentMax", "x"),
        ]);
        let mut p = Params::new(&query);
        filter(&mut p);
        sort(&mut p);
        p.int_in("page", 1, 10);
        let Err(Error::Validation(errors)) = p.finish() else {
            panic!("four errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["sentimentMax", "sort", "order", "page"]);
    }

    #[test]
    fn blank_parameters_are_absent_but_a_blank_number_is_not() {
        let query = q(&[("from", "  "), ("channels", " , "), ("page", "")]);
        let mut p = Params::new(&query);
        let f = filter(&mut p);
        assert_eq!(f, InteractionFilter::default());
        assert_eq!(p.int_in("page", 1, 10), None);
        assert!(p.finish().is_err(), "page= is not a number");
    }
}
