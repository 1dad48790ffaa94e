//! Paging of the admin lists (issue 20): `GET /api/v1/orgs`, `.../wireguard_tokens`,
//! `.../peers` and `/api/v1/api_keys`.
//!
//! Like the audit log, a list takes `limit` (default [`LIST_DEFAULT_LIMIT`], at most
//! [`LIST_MAX_LIMIT`]) and a cursor, and refuses a bad one with `422` and a JSON `error`. The
//! lists are ordered by name, so the cursor is `after`: the last name of the previous page. The
//! body stays what it always was, a JSON array; the cursor of the next page comes in the
//! `X-Next-Cursor` header and, as a URL, in `Link: <...>; rel="next"` (RFC 8288). Neither is sent
//! on the last page. Every query parameter is checked: an unknown one (say `before`, the audit
//! log's cursor) is refused rather than silently ignored, so a client never loops on page one.

use axum::Json;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

/// How many items a page of a list holds when the request names no `limit`.
pub const LIST_DEFAULT_LIMIT: u32 = 1000;
/// The largest `limit` a list accepts.
pub const LIST_MAX_LIMIT: u32 = 10_000;
/// The header holding the next page's cursor (the value to pass as `after`).
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// A list request's query: the page and the filters the list takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListQuery {
    /// Items per page.
    pub limit: u32,
    /// Only items whose name sorts after this one (lowercase, a DNS label).
    pub after: Option<String>,
    /// The filters given, by name, as sent (percent-decoded).
    pub filters: Vec<(&'static str, String)>,
}

impl ListQuery {
    /// The value of filter `name`, if given.
    pub fn filter(&self, name: &str) -> Option<&str> {
        self.filters
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads `limit`, `after` and the filters named in `filters` from a query string. Anything
/// else, a parameter given twice, a `limit` outside 1 to [`LIST_MAX_LIMIT`] or an `after` that
/// is not a name (a DNS label) is refused.
pub(super) fn list_query(
    query: Option<&str>,
    filters: &[&'static str],
) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery {
        limit: LIST_DEFAULT_LIMIT,
        after: None,
        filters: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if seen.iter().any(|k| *k == key) {
            return Err(ApiError::InvalidField {
                field: "query",
                reason: format!("names the parameter {key:?} twice; give it once"),
            });
        }
        seen.push(key.to_string());
        match &*key {
            "limit" => {
                out.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=LIST_MAX_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "limit",
                        reason: format!(
                            "must be a whole number from 1 to {LIST_MAX_LIMIT}, got {value:?}"
                        ),
                    })?;
            }
            "after" => {
                let name =
                    crate::model::parse_label(&value).map_err(|_| ApiError::InvalidField {
                        field: "after",
                        reason: format!(
                            "must be the `X-Next-Cursor` of a previous page (a name), got {value:?}"
                        ),
                    })?;
                out.after = Some(name);
            }
            other => match filters.iter().find(|f| **f == other) {
                Some(name) => out.filters.push((name, value.into_owned())),
                None => {
                    let mut known = vec!["limit", "after"];
                    known.extend_from_slice(filters);
                    return Err(ApiError::InvalidField {
                        field: "query",
                        reason: format!(
                            "has an unknown parameter {other:?}; this list takes {}",
                            known.join(", ")
                        ),
                    });
                }
            },
        }
    }
    Ok(out)
}

/// A page of a list as the API answers it: the items as a JSON array, and when another page
/// follows, its cursor in `X-Next-Cursor` and its URL in `Link`.
pub(super) struct Paged<T> {
    items: Vec<T>,
    next: Option<String>,
    link: Option<String>,
}

impl<T> Paged<T> {
    /// The page `items`, followed by the page after `next` (if any) of the same request `uri`.
    pub fn new(uri: &Uri, items: Vec<T>, next: Option<String>) -> Self {
        let link = next.as_deref().map(|next| next_link(uri, next));
        Paged { items, next, link }
    }
}

/// The URL of the page after `next`: `uri` with its `after` replaced.
fn next_link(uri: &Uri, next: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if key != "after" {
            query.append_pair(&key, &value);
        }
    }
    query.append_pair("after", next);
    format!("<{}?{}>; rel=\"next\"", uri.path(), query.finish())
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        let headers = response.headers_mut();
        // A name (a DNS label) and a URL built from one are always valid header values.
        if let Some(value) = self.next.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert(NEXT_CURSOR_HEADER, value);
        }
        if let Some(value) = self.link.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(axum::http::header::LINK, value);
        }
        response
    }
}

/// Reads the `live` filter: `true` or `false`.
pub(super) fn parse_bool(field: &'static str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::InvalidField {
            field,
            reason: format!("must be true or false, got {value:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_forms() {
        let q = list_query(None, &[]).unwrap();
        assert_eq!(
            (q.limit, q.after, q.filters.len()),
            (LIST_DEFAULT_LIMIT, None, 0)
        );
        let q = list_query(Some("limit=5&after=Node-1&group=web"), &["group"]).unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(q.after.as_deref(), Some("node-1"));
        assert_eq!(q.filter("group"), Some("web"));
        assert_eq!(q.filter("region"), None);
        // Percent-encoded as any client may send it.
        let q = list_query(Some("after=node%2D1"), &[]).unwrap();
        assert_eq!(q.after.as_deref(), Some("node-1"));
        assert_eq!(list_query(Some("limit=10000"), &[]).unwrap().limit, 10_000);
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "limit=",
            "after=",
            "after=-x",
            "after=a.b",
            "after=%00",
            "before=5",
            "group=web",
            "limit=5&limit=6",
        ] {
            let err = list_query(Some(bad), &[]).unwrap_err();
            assert_eq!(err.status(), 422, "{bad}");
        }
    }

    #[test]
    fn next_links_keep_the_query_but_the_cursor() {
        let uri: Uri = "/api/v1/orgs/x/peers?limit=2&after=a&group=web"
            .parse()
            .unwrap();
        assert_eq!(
            next_link(&uri, "node-9"),
            "</api/v1/orgs/x/peers?limit=2&group=web&after=node-9>; rel=\"next\""
        );
        let uri: Uri = "/api/v1/orgs".parse().unwrap();
        assert_eq!(next_link(&uri, "b"), "</api/v1/orgs?after=b>; rel=\"next\"");
    }
}
