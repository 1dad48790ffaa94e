//! The OpenAPI 3.1 document of both APIs, served at `GET /api/openapi.json`.
//!
//! Generated, not written: each handler carries a `#[utoipa::path]` (method, path, parameters,
//! body, answers, links), the bodies are the types of [`super::types`], and the router is built
//! from the same annotations (`utoipa_axum::routes!`, see [`super::api_routes`]), so a route
//! cannot exist without its operation. This module adds what belongs to no single operation:
//! the info block, tags, security schemes, the shared schemas, the error answers, and the
//! configured regions.

use std::collections::BTreeMap;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};

use super::types;

/// The document's fixed parts; operations are added by `OpenApiRouter::routes`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sixpn",
        description = "Private IPv6 networks over WireGuard. The peer API (/api/v3) is \
            wire-compatible with flyctl `wireguard token start|update`; the admin API (/api/v1) \
            manages orgs, WireGuard tokens and peers. Every error answers \
            {\"error\": \"<what to fix>\"}, including those of the HTTP layer (400 for an \
            unparsable request, 414, 431, 503 over the connection cap). A WireGuard token \
            reaches only the peers it created: a name another token of the same org created \
            answers 409 on create and 403 on read, re-key and delete, saying so; a name in \
            another org is 404, like no peer. Names and groups are DNS labels, \
            ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$, case-insensitive. Unknown request fields are \
            ignored. Rate limits (429 with Retry-After): per WireGuard token, and per source \
            address for failed authentications. Caps on live peers (a token's max_peers, \
            the org's [orgs] max_peers) answer 409 naming the cap: waiting does not lift them."
    ),
    tags(
        (name = "peer", description = "Peer API, authenticated by a WireGuard token"),
        (name = "admin", description = "Admin API, authenticated by an API key (sixpn_ak_...) or the bootstrap admin token. Each operation states the roles it needs in `x-sixpn-roles` and in its description, and how the key's scope applies in `x-sixpn-scope`: `org` (the org named in the path or body must be within the key's scope; any other org answers 404, exactly like a missing one), `all` (needs a key of scope \"*\"; else 403) or `any` (any scope; the answer holds only what the scope reaches)"),
        (name = "meta", description = "Health, metrics and this document"),
    ),
    components(
        schemas(types::ErrorBody),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, RequestTimeout, Conflict,
            PayloadTooLarge, UnsupportedMediaType, Unprocessable, TooManyRequests, Unavailable
        )
    ),
    modifiers(&Shared)
)]
pub struct ApiDoc;

/// Security schemes and the schemas fields refer to by name.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "bearerToken",
            bearer(
                "A WireGuard token (sixpn_wg_...): `Authorization: Bearer <token>`; \
                 `Bearer FlyV1 <token>` is accepted too",
            ),
        );
        components.add_security_scheme(
            "flyV1Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "A WireGuard token in flyctl's form: `Authorization: FlyV1 <token>`",
            ))),
        );
        components.add_security_scheme(
            "adminToken",
            bearer(
                "The admin token (SIXPN_ADMIN_TOKEN, or the admin-token file in the data \
                 directory)",
            ),
        );
        components.add_security_scheme(
            "apiKey",
            bearer(
                "An API key (sixpn_ak_...): `Authorization: Bearer <key>`. Its role (owner, \
                 operator, viewer) and scope (one org, or \"*\") decide what it may do",
            ),
        );
        components
            .schemas
            .insert("Label".to_owned(), types::label_schema().into());
        components.schemas.insert(
            "OptionalLabel".to_owned(),
            types::optional_label_schema().into(),
        );
        components
            .schemas
            .insert("PublicKey".to_owned(), types::public_key_schema().into());
        components
            .schemas
            .insert("Region".to_owned(), types::region_schema(&[]).into());
    }
}

/// Declares the error answers: a unit type per status, each a reusable response whose body is
/// the `Error` schema.
macro_rules! error_responses {
    ($($name:ident => $description:literal,)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (
                    stringify!($name),
                    ResponseBuilder::new()
                        .description($description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Error")))
                                .build(),
                        )
                        .build()
                        .into(),
                )
            }
        }
    )*};
}

error_responses! {
    BadRequest => "Malformed JSON or unreadable body",
    Unauthorized => "Missing, malformed, unknown, expired or deleted token",
    Forbidden => "Group outside the token's group, or a peer another token of the org created; in the admin API, an API key whose role does not allow the operation (the error names the role needed)",
    NotFound => "No such resource",
    RequestTimeout => "The request body did not arrive in time",
    Conflict => "Conflict with what is stored: the name is taken (this token's peer: re-key it with PUT; another token's: pick another name), the public key is another peer's or a gateway's, a re-key names another peer, group or region, the peer's region is no longer served, a cap on live peers is reached (the token's `max_peers` or the org's `[orgs] max_peers`; the error names which cap and its value, and retrying does not help), or an org to delete still has peers or tokens (delete with cascade=true)",
    PayloadTooLarge => "Request body over the size limit",
    UnsupportedMediaType => "Content-Type is not application/json",
    Unprocessable => "A field is missing or invalid (the message names it)",
    TooManyRequests => "A rate limit (with Retry-After)",
    Unavailable => "Database unavailable, no region configured, or too many connections",
}

/// Declares the error answers that operations share, each listed by its type in an operation's
/// `responses(...)`: every status refers to one of the reusable responses above.
macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident => [$($status:literal $response:ident),* $(,)?],)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(($status, <$response as ToResponse>::response().0)),*]
                    .into_iter()
                    .map(|(status, name)| (status.to_owned(), RefOr::Ref(Ref::from_response_name(name))))
                    .collect()
            }
        }
    )*};
}

error_sets! {
    /// What every authenticated operation may answer: the credential is refused, a rate limit,
    /// or the store is unavailable.
    Guarded => ["401" Unauthorized, "429" TooManyRequests, "503" Unavailable],
    /// What every admin operation may answer: [`Guarded`], and 403 for an API key whose role
    /// (or scope, for what spans every org) does not allow it.
    AdminGuarded => [
        "401" Unauthorized,
        "403" Forbidden,
        "429" TooManyRequests,
        "503" Unavailable,
    ],
    /// What reading a JSON request body may answer.
    JsonBody => [
        "400" BadRequest,
        "408" RequestTimeout,
        "413" PayloadTooLarge,
        "415" UnsupportedMediaType,
        "422" Unprocessable,
    ],
}

/// The document as served: `doc` (from the router) with the configured regions.
pub fn finish(mut doc: utoipa::openapi::OpenApi, regions: &[&str]) -> serde_json::Value {
    if let Some(components) = doc.components.as_mut() {
        components
            .schemas
            .insert("Region".to_owned(), types::region_schema(regions).into());
    }
    let mut doc = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    describe_roles(&mut doc);
    doc
}

/// Appends the roles each admin operation needs (its `x-sixpn-roles`) to its description, for
/// readers of the document that do not show extensions.
fn describe_roles(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut() {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let Some(roles) = op.get("x-sixpn-roles").and_then(|r| r.as_array()) else {
                continue;
            };
            let roles: Vec<&str> = roles.iter().filter_map(|r| r.as_str()).collect();
            let scope = match op.get("x-sixpn-scope").and_then(|s| s.as_str()) {
                Some("all") => " with scope \"*\"",
                _ => "",
            };
            let line = format!("Roles: {}{scope}.", roles.join(", "));
            let text = match op.get("description").and_then(|d| d.as_str()) {
                Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
                _ => line,
            };
            op["description"] = serde_json::Value::String(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = crate::api::openapi_document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10);
        for r in found {
            let (kind, name) = r
                .strip_prefix("#/components/")
                .and_then(|rest| rest.split_once('/'))
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(
                doc["components"][kind].get(name).is_some(),
                "dangling $ref {r}"
            );
        }
    }

    #[test]
    fn every_operation_has_responses_and_known_security() {
        let doc = crate::api::openapi_document();
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                assert!(!op["responses"].as_object().unwrap().is_empty());
                for requirement in op["security"].as_array().into_iter().flatten() {
                    for scheme in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(scheme), "{scheme} in {method} {path}");
                    }
                }
            }
        }
    }

    /// Every link names an operation of the document and passes only parameters it has.
    #[test]
    fn links_point_at_real_operations() {
        let doc = crate::api::openapi_document();
        let mut operations = std::collections::HashMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                let names: Vec<String> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect();
                operations.insert(
                    op["operationId"].as_str().unwrap().to_owned(),
                    (path, names),
                );
            }
        }
        let mut count = 0;
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                for (_, response) in op["responses"].as_object().unwrap() {
                    for (name, link) in response["links"].as_object().into_iter().flatten() {
                        count += 1;
                        let target = link["operationId"]
                            .as_str()
                            .unwrap_or_else(|| panic!("link {name} has no operationId: {link}"));
                        let (path, params) = &operations[target];
                        for param in link["parameters"].as_object().unwrap().keys() {
                            assert!(params.contains(param), "{name}: {param} not in {path}");
                        }
                    }
                }
            }
        }
        assert!(count >= 3, "{count} links");
    }
}
