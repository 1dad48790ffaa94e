//! [`JsonObject`]: the request-body extractor, with an error for every way a body can be wrong.
//!
//! axum's `Json<T>` answers rejections in plain text and names no field, so bodies are read here:
//! the content type is checked, the bytes are read under the configured limit, the JSON is parsed
//! into an object, and each handler then takes the fields it knows one by one, so a wrong value
//! is reported with its field name. Unknown fields are ignored, as flyctl may add some.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Shared;
use super::error::ApiError;

/// A request body that is a JSON object.
#[derive(Debug, Default)]
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<Shared> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        check_content_type(req.headers().get(header::CONTENT_TYPE))?;
        // A client that stops sending in the middle of its body is not waited for: the
        // connection's idle timeout does not run while a request is being handled.
        let read = tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| ApiError::BodyTimeout(state.body_timeout))?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge(state.body_limit)
                } else {
                    ApiError::BodyUnreadable(rejection.body_text())
                }
            })?;
        parse_object(&bytes).map(JsonObject)
    }
}

/// Path parameters, with a JSON error when they cannot be read (e.g. percent-encoded bytes that
/// are not UTF-8).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T> FromRequestParts<Shared> for ApiPath<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::InvalidField {
                field: "path",
                reason: format!(
                    "cannot be read: {}; names are DNS labels",
                    rejection.body_text()
                ),
            })
    }
}

fn check_content_type(value: Option<&header::HeaderValue>) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Err(ApiError::WrongContentType("(none)".to_owned()));
    };
    let text = value.to_str().unwrap_or("(not ASCII)");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::WrongContentType(format!("{text:?}")))
    }
}

/// Parses `bytes` as a JSON object. A leading UTF-8 byte-order mark, which some Windows tools
/// write, is skipped (issue 13); a UTF-16 or UTF-32 one is named in the error.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.starts_with(b"\xFF\xFE")
        || bytes.starts_with(b"\xFE\xFF")
        || bytes.starts_with(b"\0\0\xFE\xFF")
    {
        return Err(ApiError::MalformedJson(
            "the body starts with a UTF-16 or UTF-32 byte-order mark; send the JSON as UTF-8"
                .to_owned(),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the body is empty; send a JSON object".to_owned(),
        ));
    }
    match serde_json::from_slice::<TopLevel>(bytes) {
        Ok(TopLevel(map)) => Ok(map),
        Err(err) if err.is_data() => Err(ApiError::BadBody(err.to_string())),
        Err(err) => Err(ApiError::MalformedJson(err.to_string())),
    }
}

/// The top-level object of a body. Unlike `serde_json::Value`, it refuses duplicate keys: with
/// `{"name":"a","name":"b"}` a proxy and this server might each believe a different name.
struct TopLevel(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<TopLevel, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "field `{key}` appears more than once"
                        )));
                    }
                    map.insert(key, value);
                }
                Ok(TopLevel(map))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The JSON kind of a value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON number as a non-negative integer: `5` and `5.0` alike (JSON Schema's `integer`
/// includes numbers with a zero fraction); `None` for a fraction, a negative number, or one
/// beyond `u64`.
pub fn whole_number(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            // In range and whole: the cast is exact up to f64's precision.
            .map(|f| f as u64)
    })
}

impl JsonObject {
    /// A string field; absent, `null` and `""` all read as `None` (flyctl sends empty strings
    /// for fields it leaves to the server).
    pub fn string(&self, field: &'static str) -> Result<Option<&str>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::InvalidField {
                field,
                reason: format!("must be a string, got {}", kind(other)),
            }),
        }
    }

    /// A string field that must be present and non-empty.
    pub fn required_string(&self, field: &'static str) -> Result<&str, ApiError> {
        self.string(field)?.ok_or(ApiError::MissingField(field))
    }

    /// A boolean field; absent or `null` is `None`.
    pub fn bool(&self, field: &'static str) -> Result<Option<bool>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ApiError::InvalidField {
                field,
                reason: format!("must be true or false, got {}", kind(other)),
            }),
        }
    }

    /// A non-negative integer field that fits in a `u32`; absent or `null` is `None`. A number
    /// written with a zero fraction (`5.0`) is that integer, as JSON Schema's `integer` says.
    pub fn u32(&self, field: &'static str) -> Result<Option<u32>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => whole_number(n)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| ApiError::InvalidField {
                    field,
                    reason: format!("must be a whole number from 0 to {}, got {n}", u32::MAX),
                }),
            Some(other) => Err(ApiError::InvalidField {
                field,
                reason: format!("must be a number, got {}", kind(other)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = |s: &'static str| check_content_type(Some(&header::HeaderValue::from_static(s)));
        assert!(ok("application/json").is_ok());
        assert!(ok("Application/JSON; charset=utf-8").is_ok());
        assert!(ok("application/merge-patch+json").is_ok());
        assert!(ok("text/plain").is_err());
        assert!(ok("application/x-www-form-urlencoded").is_err());
        assert!(ok("application/jsonp").is_err());
        assert!(check_content_type(None).is_err());
    }

    #[test]
    fn objects() {
        assert!(matches!(
            parse_object(b"{\"a\":1}\n"),
            Ok(map) if map.len() == 1
        ));
        assert!(matches!(parse_object(b""), Err(ApiError::MalformedJson(_))));
        assert!(matches!(
            parse_object(b"\xEF\xBB\xBF{\"a\":1}\n"),
            Ok(map) if map.len() == 1
        ));
        assert!(matches!(
            parse_object(b"\xEF\xBB\xBF"),
            Err(ApiError::MalformedJson(msg)) if msg.contains("empty")
        ));
        assert!(matches!(
            parse_object(b"\xFF\xFE{\0}\0"),
            Err(ApiError::MalformedJson(msg)) if msg.contains("byte-order mark")
        ));
        assert!(matches!(
            parse_object(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(parse_object(b"[1]"), Err(ApiError::BadBody(_))));
        assert!(matches!(parse_object(b"null"), Err(ApiError::BadBody(_))));
        assert!(matches!(parse_object(b"\"s\""), Err(ApiError::BadBody(_))));
        assert!(matches!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(ApiError::BadBody(msg)) if msg.contains("more than once")
        ));
        assert!(matches!(
            parse_object(b"{\"a\":{\"b\":1}} x"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn fields() {
        let body = JsonObject(
            serde_json::from_str(r#"{"a":"x","e":"","n":null,"i":5,"neg":-1,"big":5000000000}"#)
                .unwrap(),
        );
        assert_eq!(body.string("a").unwrap(), Some("x"));
        assert_eq!(body.string("e").unwrap(), None);
        assert_eq!(body.string("n").unwrap(), None);
        assert_eq!(body.string("missing").unwrap(), None);
        assert!(matches!(
            body.string("i"),
            Err(ApiError::InvalidField { field: "i", .. })
        ));
        assert!(matches!(
            body.required_string("e"),
            Err(ApiError::MissingField("e"))
        ));
        assert_eq!(body.u32("i").unwrap(), Some(5));
        assert!(body.u32("neg").is_err());
        assert!(body.u32("big").is_err());
        assert!(body.u32("a").is_err());
        let body =
            JsonObject(serde_json::from_str(r#"{"f":5.0,"h":5.5,"e":1e2,"z":-0.0}"#).unwrap());
        assert_eq!(body.u32("f").unwrap(), Some(5));
        assert_eq!(body.u32("e").unwrap(), Some(100));
        assert_eq!(body.u32("z").unwrap(), Some(0));
        assert!(body.u32("h").is_err());
    }
}
