//! Field-by-field validation of JSON bodies, collecting every error rather than stopping at the first
//! (API.md: "every bad field listed, not just the first").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// One invalid field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The JSON field name, or an empty string for the body as a whole.
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The characters `str::trim` removes (Unicode `White_Space`), as the inside of a regex character class
/// that reads the same in ECMA-262 (the dialect of OpenAPI's `pattern`), Python and Rust's `regex`.
pub const WHITESPACE_CLASS: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The characters `char::is_control` finds (Unicode `Cc`), likewise.
pub const CONTROL_CLASS: &str = r"\x00-\x1f\x7f-\x9f";

/// The control characters free text may not hold (R9.12): every one [`CONTROL_CLASS`] names but tab,
/// line feed and carriage return, which are part of text. They have no business in a message, a name or
/// metadata, and they are how a terminal, a log viewer or a CSV reader is attacked; U+0000 cannot even
/// be stored by PostgreSQL.
pub const REFUSED_CONTROL_CLASS: &str = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f";

/// The pattern of a free text (a message, a search): no control character but tab, line feed and
/// carriage return.
pub const FREE_TEXT_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// Said of a text holding U+0000.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// True for a control character free text may not hold (see [`REFUSED_CONTROL_CLASS`]).
pub fn is_refused_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The first control character free text may not hold, if `s` has one.
pub fn refused_control(s: &str) -> Option<char> {
    s.chars().find(|&c| is_refused_control(c))
}

/// The first control character free text may not hold, in any string or key of `value`, at any depth.
pub fn json_refused_control(value: &Value) -> Option<char> {
    match value {
        Value::String(s) => refused_control(s),
        Value::Array(items) => items.iter().find_map(json_refused_control),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| refused_control(k).or_else(|| json_refused_control(v))),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// What is wrong with a free text holding the control character `c`, naming it.
pub fn control_message(c: char) -> String {
    if c == '\0' {
        return NUL_MESSAGE.to_owned();
    }
    format!(
        "must not contain control characters other than tab, line feed and carriage return (found U+{:04X})",
        u32::from(c)
    )
}

/// Said of a single-line text (a name, an id, a type) holding a control character.
pub const NO_CONTROLS_MESSAGE: &str = "must not contain control characters";

/// The pattern of a text that the validator trims and then requires to hold 1 to `max_chars` characters,
/// none of them a control character: the document says exactly what is accepted.
pub fn trimmed_text_pattern(max_chars: usize) -> String {
    let (edge, inner) = (
        format!("[^{WHITESPACE_CLASS}{CONTROL_CLASS}]"),
        format!("[^{CONTROL_CLASS}]"),
    );
    let around = format!("[{WHITESPACE_CLASS}]*");
    let between = max_chars.saturating_sub(2);
    format!("^{around}{edge}(?:{inner}{{0,{between}}}{edge})?{around}$")
}

/// The pattern of a text holding something besides whitespace (an unanchored search, as JSON Schema reads
/// `pattern`).
pub fn non_blank_pattern() -> String {
    format!("[^{WHITESPACE_CLASS}]")
}

/// The pattern of a value that is blank once trimmed: an optional query parameter left empty.
pub fn blank_pattern() -> String {
    format!("^[{WHITESPACE_CLASS}]*$")
}

/// Reads fields of a JSON object and accumulates what is wrong with them.
pub struct Fields<'a> {
    object: Option<&'a Map<String, Value>>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts reading `body`, which must be a JSON object.
    pub fn new(body: &'a Value) -> Self {
        let mut errors = Vec::new();
        let object = body.as_object();
        if object.is_none() {
            errors.push(FieldError::new("", "body must be a JSON object"));
        }
        Self { object, errors }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.object.and_then(|o| o.get(name)).filter(|v| !v.is_null())
    }

    /// Returns a required string field, recording an error when it is absent or not a string.
    pub fn required_str(&mut self, name: &str) -> Option<&'a str> {
        // A body that is not an object was already reported once; its fields are not reported again.
        self.object?;
        match self.get(name) {
            None => {
                self.error(name, "is required");
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    /// Returns an optional string field; `null` counts as absent.
    pub fn optional_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    /// For a PATCH: `None` when absent, `Some(None)` when `null` (clear it), `Some(Some(s))` for a string.
    pub fn nullable_str(&mut self, name: &str) -> Option<Option<&'a str>> {
        match self.object.and_then(|o| o.get(name)) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => {
                self.error(name, "must be a string or null");
                None
            }
        }
    }

    /// Returns an optional JSON object field; `null` counts as absent. Its keys and texts are free text:
    /// no control character but tab, line feed and carriage return, at any depth.
    pub fn optional_object(&mut self, name: &str) -> Option<&'a Map<String, Value>> {
        match self.get(name) {
            None => None,
            Some(v @ Value::Object(_)) if json_refused_control(v).is_some() => {
                let c = json_refused_control(v).unwrap_or('\0');
                self.error(name, control_message(c));
                None
            }
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.error(name, "must be a JSON object");
                None
            }
        }
    }

    /// Returns an optional integer field within `min..=max`; `null` counts as absent.
    pub fn optional_int_in(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        match self.get(name) {
            None => None,
            // JSON has one number type: 8.0 is the integer 8 (as JSON Schema's `integer` says).
            Some(Value::Number(n)) if integral(n).is_some_and(|v| (min..=max).contains(&v)) => integral(n),
            Some(_) => {
                self.error(name, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// Returns an optional boolean field; `null` counts as absent.
    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(name, "must be true or false");
                None
            }
        }
    }

    /// Returns an optional number field within `min..=max`; `null` counts as absent.
    pub fn optional_number_in(&mut self, name: &str, min: f64, max: f64) -> Option<f64> {
        match self.get(name) {
            None => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|v| (min..=max).contains(&v)) => n.as_f64(),
            Some(_) => {
                self.error(name, format!("must be a number from {min} to {max}"));
                None
            }
        }
    }

    /// Records several errors at once.
    pub fn extend(&mut self, errors: Vec<FieldError>) {
        self.errors.extend(errors);
    }

    /// Runs a parser on a present value and records its error under `name`.
    pub fn parse<T>(
        &mut self,
        name: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = value?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    /// Records an error.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Returns the value built by `build` when no error was recorded, else every error.
    ///
    /// `build` sees the parsed fields as `Option`s; when no error was recorded every required one is
    /// `Some`, so a `None` there means a field was forgotten and is reported as a body error.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        build().ok_or_else(|| vec![FieldError::new("", "body is incomplete")])
    }
}

/// The integer a JSON number stands for, if it is one (`8` or `8.0`, not `8.5`).
fn integral(n: &serde_json::Number) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: beyond it a float has no fractional part to check
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < EXACT)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Texts made of the characters validators treat specially (whitespace inside and outside ASCII,
    /// controls, `@` and `.`, multi-byte letters), short or around `limit` characters long.
    pub(crate) fn tricky_text(limit: usize) -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'Z', '0', ' ', '\t', '\n', '\u{1}', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}', '\u{3000}',
            '@', '.', 'é', 'İ', '😀',
        ]);
        let len = prop_oneof![0..8usize, limit.saturating_sub(8)..limit + 8];
        len.prop_flat_map(move |n| prop::collection::vec(chars.clone(), n))
            .prop_map(|cs| cs.into_iter().collect())
    }

    #[test]
    fn every_bad_field_is_reported() {
        let body = json!({"a": 1, "c": "ok"});
        let mut f = Fields::new(&body);
        let a = f.required_str("a");
        let b = f.required_str("b");
        let c = f.parse("c", f_required(&body, "c"), |s| {
            if s == "ok" { Ok(s.len()) } else { Err("bad".into()) }
        });
        let errors = f.finish(|| Some((a?, b?, c?))).unwrap_err();
        assert_eq!(
            errors,
            vec![
                FieldError::new("a", "must be a string"),
                FieldError::new("b", "is required")
            ]
        );
    }

    fn f_required<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
        body.get(name).and_then(Value::as_str)
    }

    #[test]
    fn the_whitespace_class_is_what_trim_removes_and_the_control_class_what_is_control() {
        let whitespace = regex::Regex::new(&format!("^[{WHITESPACE_CLASS}]$")).unwrap();
        let control = regex::Regex::new(&format!("^[{CONTROL_CLASS}]$")).unwrap();
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(whitespace.is_match(&s), c.is_whitespace(), "{c:?}");
            assert_eq!(control.is_match(&s), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn trimmed_text_patterns_count_the_trimmed_text() {
        let p = regex::Regex::new(&trimmed_text_pattern(3)).unwrap();
        for ok in ["a", " abc ", "a b", "\tabc\n", "\u{3000}ab"] {
            assert!(p.is_match(ok), "{ok:?}");
        }
        for bad in ["", "   ", "abcd", "a\u{1}b", "\u{85}"] {
            assert!(!p.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn free_text_refuses_every_control_character_but_tab_and_line_breaks() {
        let refused = regex::Regex::new(&format!("^[{REFUSED_CONTROL_CLASS}]$")).unwrap();
        let free = regex::Regex::new(FREE_TEXT_PATTERN).unwrap();
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(refused.is_match(&s), is_refused_control(c), "{c:?}");
            assert_eq!(free.is_match(&s), !is_refused_control(c), "{c:?}");
        }
        for ok in [
            "line one\r\nline two\tend",
            "<img src=x onerror=alert(1)>",
            "\u{202e}evil",
        ] {
            assert_eq!(refused_control(ok), None, "{ok:?}");
        }
        assert_eq!(
            json_refused_control(&json!({"a": [1, {"b\u{0}": 2}]})),
            Some('\0')
        );
        assert_eq!(
            json_refused_control(&json!({"a": [1, {"b": "x\u{1b}[2J"}]})),
            Some('\u{1b}')
        );
        assert_eq!(json_refused_control(&json!({"a\nb": ["\t"]})), None);
        assert_eq!(
            control_message('\u{7}'),
            "must not contain control characters other than tab, line feed and carriage return (found U+0007)"
        );
        assert_eq!(control_message('\0'), NUL_MESSAGE);
    }

    #[test]
    fn null_optional_fields_are_absent_and_non_objects_are_refused() {
        let body = json!({"x": null});
        let mut f = Fields::new(&body);
        assert_eq!(f.optional_str("x"), None);
        assert_eq!(f.finish(|| Some(1)), Ok(1));

        let body = json!([1, 2]);
        let mut f = Fields::new(&body);
        assert_eq!(f.required_str("x"), None);
        let errors = f.finish(|| Some(())).unwrap_err();
        assert_eq!(errors, vec![FieldError::new("", "body must be a JSON object")]);
    }
}
