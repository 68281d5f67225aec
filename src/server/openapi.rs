//! The HTTP API's OpenAPI 3.1 description, served at `/openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` (method, path, query
//! parameters, bodies, success statuses); the router is built from those
//! same handlers (`utoipa_axum::routes!`), so a route cannot exist without
//! its description. This module adds what every operation shares: the
//! error responses (one JSON shape for all, from `server::error`), the
//! bearer-token scheme, and the named schemas the handlers refer to.

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

/// The description's frame, before the handlers' paths join it.
pub(super) fn base() -> OpenApi {
    let mut api = OpenApi::default();
    api.info.title = "AllSource".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "An event store and SQL-first analytical event database. Every route takes \
         `Authorization: Bearer <token>` when the server checks tokens, and \
         `x-allsource-tenant` to act on a tenant an admin token names. Errors are \
         `{\"error\": message, \"details\"?: facts}` with the status of their kind."
            .into(),
    );
    api.info.license = None;
    api
}

/// Errors any operation may answer, beyond those it lists itself.
const ERRORS: [(u16, &str); 11] = [
    (400, "The request is wrong: the message says what and where"),
    (401, "No usable credentials"),
    (403, "The credentials do not allow this"),
    (404, "What the request names does not exist"),
    (408, "The request ran past its time limit"),
    (409, "The request conflicts with the current state"),
    (413, "The request is larger than a limit allows"),
    (415, "The body's content type is not one this route takes"),
    (
        429,
        "Over a rate or concurrency limit: retry after `Retry-After` seconds",
    ),
    (
        503,
        "Cannot take the request now (starting, shutting down, buffers full): retry after `Retry-After` seconds",
    ),
    (507, "The disk is full: nothing was stored"),
];

/// The description as served, as JSON: the shared errors on every
/// operation, the security scheme and the named schemas (written as JSON
/// Schema, which says more than utoipa's model of it takes).
pub(super) fn finish(api: OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).expect("the description serializes");
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let responses = &mut op["responses"];
                for (status, description) in ERRORS {
                    if responses.get(status.to_string()).is_none() {
                        responses[status.to_string()] = json!({
                            "description": description,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                        });
                    }
                }
            }
        }
    }
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    for (name, schema) in schemas() {
        components["schemas"][name] = schema;
    }
    // A token when the server checks them; none when it does not.
    doc["security"] = json!([{"bearer": []}, {}]);
    doc
}

/// The named schemas, as JSON Schema.
fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Error",
            json!({
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "description": "What went wrong, and where"},
                    "details": {"description": "Facts a client acts on: the event at fault, the rules broken, the versions of a conflict"}
                }
            }),
        ),
        (
            "Event",
            json!({
                "type": "object",
                "description": "One event. Fields of your own go under `payload`.",
                "required": ["event_type", "entity_id"],
                "additionalProperties": false,
                "properties": {
                    "event_type": {"type": "string", "minLength": 1},
                    "entity_id": {"type": "string", "minLength": 1},
                    "timestamp": {
                        "description": "RFC 3339 text or epoch milliseconds; the server's clock when left out",
                        "type": ["string", "integer", "null"]
                    },
                    "event_id": {"type": ["string", "null"], "description": "The client's id: a retry with the same id is stored once"},
                    "expected_version": {
                        "description": "The entity's version the event must follow: a number, `no_stream` or `any`",
                        "type": ["integer", "string", "null"]
                    },
                    "schema_version": {"type": ["integer", "null"], "minimum": 1},
                    "payload": {"type": ["object", "null"]}
                }
            }),
        ),
        (
            "IngestReply",
            json!({
                "type": "object",
                "required": ["accepted", "duplicates"],
                "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "duplicates": {"type": "integer", "minimum": 0, "description": "Events whose event_id was already stored"},
                    "first_position": {"type": "integer", "minimum": 0},
                    "last_position": {"type": "integer", "minimum": 0},
                    "events": {
                        "type": "array",
                        "description": "With `reply=events`: each event's position and version (null for a duplicate stored before positions existed)",
                        "items": {
                            "type": ["object", "null"],
                            "properties": {"position": {"type": "integer"}, "version": {"type": "integer"}}
                        }
                    },
                    "warnings": {"description": "Validation rules in `warn` mode that events broke"}
                }
            }),
        ),
        (
            "Rows",
            json!({
                "type": "array",
                "description": "A query's rows, one JSON object each",
                "items": {"type": "object"}
            }),
        ),
        (
            "Object",
            json!({"type": "object", "description": "See the README section of this route"}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_added_beside_an_operations_own() {
        let mut api = base();
        let op: utoipa::openapi::path::Operation = serde_json::from_value(json!({
            "responses": {"400": {"description": "own"}}
        }))
        .unwrap();
        let mut item = utoipa::openapi::PathItem::default();
        item.get = Some(op);
        api.paths.paths.insert("/x".into(), item);
        let doc = finish(api);
        let responses = &doc["paths"]["/x"]["get"]["responses"];
        assert_eq!(responses["400"]["description"], "own");
        assert_eq!(
            responses["404"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(doc["components"]["schemas"]["Event"]["properties"]["payload"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
