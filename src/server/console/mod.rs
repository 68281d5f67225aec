//! The web console at `/`: one page (`index.html`, built into the binary)
//! whose script calls the same HTTP API as any client (`/v1/sql`,
//! `/v1/query`, `information_schema`), with the token the user pastes
//! when the server checks them. The page itself holds no data, so it is
//! served without credentials.
//!
//! Its script is allowed by its SHA-256 in the page's Content-Security-
//! Policy, and nothing may be loaded from elsewhere; query results are
//! written into the page as text, never as markup.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::sync::OnceLock;

const PAGE: &str = include_str!("index.html");

/// The page's one inline script.
fn script() -> &'static str {
    let start = PAGE.find("<script>").map_or(0, |i| i + "<script>".len());
    let end = PAGE.rfind("</script>").unwrap_or(PAGE.len());
    &PAGE[start..end.max(start)]
}

/// The page's Content-Security-Policy: its own script (by hash), its own
/// styles, and requests to this server only.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, script().as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'none'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// `GET /`: the web console.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses((status = 200, description = "The web console: an SQL and DSL editor with history, a results grid, charts and the table browser", content_type = "text/html"))
)]
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, policy()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_page_script_by_its_hash() {
        assert!(script().contains("async function run()"));
        assert!(!script().contains("<script"));
        let p = policy();
        assert!(
            p.starts_with("default-src 'none'; script-src 'sha256-"),
            "{p}"
        );
        let scripts = p.split("; ").find(|d| d.starts_with("script-src")).unwrap();
        assert!(!scripts.contains("unsafe"), "{p}");
    }
}
