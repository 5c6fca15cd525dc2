//! Field-by-field validation of JSON bodies, collecting every error rather than stopping at the first
//! (API.md: "every bad field listed, not just the first").

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// One invalid field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

    /// Returns an optional JSON object field; `null` counts as absent.
    pub fn optional_object(&mut self, name: &str) -> Option<&'a Map<String, Value>> {
        match self.get(name) {
            None => None,
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
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) => n.as_i64(),
            Some(_) => {
                self.error(name, format!("must be an integer from {min} to {max}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
