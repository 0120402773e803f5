//! The web page `serve` answers `GET /` with: one HTML document, its script and its style
//! sheet, embedded in the binary (no build step, nothing fetched from elsewhere), served with a
//! Content-Security-Policy that allows only these files and calls back to this server.

use super::http::Response;

/// The page.
pub(crate) const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script (`/app.js`).
pub(crate) const APP_JS: &str = include_str!("page/app.js");
/// Its style sheet (`/app.css`).
pub(crate) const APP_CSS: &str = include_str!("page/app.css");

/// Only this origin's script, style and fetches; no inline code, no frames, no plugins.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The response for one of the page's paths (`/`, `/app.js`, `/app.css`).
pub(crate) fn asset(path: &str) -> Option<Response> {
    let (ct, body) = match path {
        "/" => ("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    Some(
        Response::bytes(200, ct, body.as_bytes().to_vec())
            .with("Content-Security-Policy", CSP)
            .with("X-Content-Type-Options", "nosniff")
            .with("Referrer-Policy", "no-referrer")
            .with("X-Frame-Options", "DENY")
            // A new binary may bring a new page: always revalidate.
            .with("Cache-Control", "no-cache"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_only_its_own_files() {
        assert!(INDEX_HTML.contains("src=\"/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/app.css\""));
        // No inline script or style, nothing from another origin (the CSP would block it).
        for (name, text) in [("index.html", INDEX_HTML), ("app.css", APP_CSS)] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name} refers to another origin"
            );
        }
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains(" style="), "inline style attribute");
        let handler = INDEX_HTML.split(" on").skip(1).any(|rest| {
            let word: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !word.is_empty() && rest[word.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(
            !APP_JS.contains("innerHTML"),
            "app.js builds DOM nodes, never HTML strings"
        );
        let r = asset("/").unwrap();
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "Content-Security-Policy" && v.contains("script-src 'self'")));
        assert!(asset("/nope").is_none());
    }
}
