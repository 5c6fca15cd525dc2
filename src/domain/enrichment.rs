//! Enrichment of an interaction from its metadata (R12.3–12.4): the device, normalized from a user-agent
//! string (parsed by woothee, whose rules are compiled in) or from explicit fields, and the geolocation
//! when the metadata carries one. Pure functions; invalid coordinates are reported as field errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::FieldError;

/// The device an interaction came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// `desktop`, `mobile`, `tablet`, `appliance`, `bot` or `unknown` (or an explicit value, lowercased).
    #[serde(rename = "type")]
    pub kind: String,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    /// `userAgent` when parsed from a user-agent string, `explicit` when given as fields.
    pub source: String,
}

/// Where an interaction came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 codes are uppercased; other names are kept as given.
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

fn text(map: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| map.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(200).collect())
}

/// Parses a user-agent string into a device.
pub fn device_from_user_agent(ua: &str) -> Device {
    let Some(parsed) = woothee::parser::Parser::new().parse(ua) else {
        return Device {
            kind: "unknown".to_owned(),
            source: "userAgent".to_owned(),
            ..Device::default()
        };
    };
    let known = |s: &str| (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_owned());
    let lower_ua = ua.to_ascii_lowercase();
    let kind = match parsed.category {
        "pc" => "desktop",
        "smartphone" if lower_ua.contains("ipad") || lower_ua.contains("tablet") => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "appliance" => "appliance",
        "crawler" => "bot",
        _ => "unknown",
    };
    Device {
        kind: kind.to_owned(),
        os: known(parsed.os),
        os_version: known(&parsed.os_version),
        browser: known(parsed.name),
        browser_version: known(parsed.version),
        source: "userAgent".to_owned(),
    }
}

/// Derives the device: explicit fields (`device: {type, os, browser}` or `deviceType`/`os`/`browser`)
/// win over a parsed `userAgent`.
pub fn device(metadata: &Map<String, Value>) -> Option<Device> {
    let parsed = text(metadata, &["userAgent", "user_agent", "ua"]).map(|ua| device_from_user_agent(&ua));
    let explicit_map = metadata.get("device").and_then(Value::as_object);
    let source = explicit_map.unwrap_or(metadata);
    let kind = text(source, &["type", "deviceType", "device_type"]).map(|k| k.to_lowercase());
    let os = text(source, &["os"]);
    let browser = text(source, &["browser"]);
    if kind.is_none() && os.is_none() && browser.is_none() {
        return parsed;
    }
    let base = parsed.unwrap_or_default();
    Some(Device {
        kind: kind.unwrap_or(if base.kind.is_empty() {
            "unknown".to_owned()
        } else {
            base.kind
        }),
        os: os.or(base.os),
        os_version: text(source, &["osVersion", "os_version"]).or(base.os_version),
        browser: browser.or(base.browser),
        browser_version: text(source, &["browserVersion", "browser_version"]).or(base.browser_version),
        source: "explicit".to_owned(),
    })
}

fn coordinate(
    map: &Map<String, Value>,
    keys: &[&str],
    limit: f64,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let value = keys.iter().find_map(|k| map.get(*k)).filter(|v| !v.is_null())?;
    let number = value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
    match number {
        Some(n) if n.is_finite() && n.abs() <= limit => Some(n),
        _ => {
            errors.push(FieldError::new(
                field,
                format!("must be a number between -{limit} and {limit}"),
            ));
            None
        }
    }
}

/// Extracts the geolocation from `geo: {...}`, `location: {...}` or top-level fields, when present.
pub fn geo(metadata: &Map<String, Value>) -> Result<Option<Geo>, Vec<FieldError>> {
    let (source, prefix) = match (metadata.get("geo"), metadata.get("location")) {
        (Some(Value::Object(g)), _) => (g, "metadata.geo"),
        (_, Some(Value::Object(g))) => (g, "metadata.location"),
        _ => (metadata, "metadata"),
    };
    let mut errors = Vec::new();
    let lat = coordinate(
        source,
        &["lat", "latitude"],
        90.0,
        &format!("{prefix}.lat"),
        &mut errors,
    );
    let lon = coordinate(
        source,
        &["lon", "lng", "longitude"],
        180.0,
        &format!("{prefix}.lon"),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let country = text(source, &["country", "countryCode", "country_code"]).map(|c| {
        if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) {
            c.to_ascii_uppercase()
        } else {
            c
        }
    });
    let geo = Geo {
        country,
        region: text(source, &["region", "state"]),
        city: text(source, &["city"]),
        lat,
        lon,
    };
    Ok((geo != Geo::default()).then_some(geo))
}

/// The organization an interaction belongs to, as recorded in its enrichment (R12.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrgContext {
    #[schema(value_type = String, format = Uuid)]
    pub id: super::OrganizationId,
    pub name: String,
}

/// Everything added to an interaction at ingestion, stored in its `enrichment` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Enrichment {
    pub organization: OrgContext,
    /// The customer's segment at ingestion time (R12.2).
    pub segment: Option<String>,
    pub device: Option<Device>,
    pub geo: Option<Geo>,
}

impl Enrichment {
    /// Serializes the enrichment for the `enrichment` jsonb column.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn user_agents_become_devices() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let d = device_from_user_agent(chrome);
        assert_eq!(d.kind, "desktop");
        assert_eq!(d.browser.as_deref(), Some("Chrome"));
        assert!(d.os.as_deref().unwrap().starts_with("Windows"), "{d:?}");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let d = device_from_user_agent(iphone);
        assert_eq!(d.kind, "mobile");
        assert_eq!(d.os.as_deref(), Some("iPhone"));
        let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(device_from_user_agent(bot).kind, "bot");
        assert_eq!(device_from_user_agent("???").kind, "unknown");
    }

    #[test]
    fn explicit_device_fields_win() {
        let m = obj(
            json!({"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0", "device": {"type": "Tablet", "os": "Android"}}),
        );
        let d = device(&m).unwrap();
        assert_eq!(d.kind, "tablet");
        assert_eq!(d.os.as_deref(), Some("Android"));
        assert_eq!(d.source, "explicit");
        assert_eq!(device(&obj(json!({"page": "/"}))), None);
        let flat = device(&obj(json!({"deviceType": "mobile", "browser": "Firefox"}))).unwrap();
        assert_eq!(
            (flat.kind.as_str(), flat.browser.as_deref()),
            ("mobile", Some("Firefox"))
        );
    }

    #[test]
    fn geolocation_is_extracted_and_checked() {
        let g = geo(&obj(json!({"geo": {"country": "de", "region": "Berlin", "city": "Berlin", "lat": 52.52, "lon": "13.40"}})))
            .unwrap()
            .unwrap();
        assert_eq!(g.country.as_deref(), Some("DE"));
        assert_eq!(g.lat, Some(52.52));
        assert_eq!(g.lon, Some(13.40));
        let flat = geo(&obj(
            json!({"country": "France", "latitude": 48.85, "longitude": 2.35}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(flat.country.as_deref(), Some("France"));
        assert_eq!(geo(&obj(json!({"page": "/"}))).unwrap(), None);
        let errors = geo(&obj(json!({"geo": {"lat": 91, "lon": "east"}}))).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.geo.lat", "metadata.geo.lon"]);
    }
}
