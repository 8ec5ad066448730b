//! The tracker script served at `/spur.js`. The source in `collector/tracker/spur.js`
//! is readable and commented; at start-up comment lines and indentation are stripped
//! (the source is written so that this is a safe minification), and the result is
//! served with an `ETag` and a one-hour cache lifetime.

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};

use crate::reply::{Body, cached_response, etag_of};

const SOURCE: &str = include_str!("../tracker/spur.js");

#[derive(Debug, Clone)]
pub struct Tracker {
    body: Bytes,
    etag: HeaderValue,
}

/// The served form of a tracker source: comment lines dropped, and whitespace outside
/// string literals removed except where it separates two identifier characters (or
/// two `+`/`-`). Safe for sources that end every statement with `;`, put comments on
/// their own lines and use no regex literal containing whitespace or quotes.
pub fn minify(source: &str) -> String {
    let code: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(source.len());
    let (mut quote, mut escaped, mut space, mut prev) = (None, false, false, '\0');
    for c in code.join("\n").chars() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            prev = c;
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && ((ident(prev) && ident(c)) || (prev == c && (c == '+' || c == '-'))) {
            out.push(' ');
        }
        space = false;
        if c == '\'' || c == '"' {
            quote = Some(c);
        }
        out.push(c);
        prev = c;
    }
    out
}

impl Default for Tracker {
    fn default() -> Self {
        let body = minify(SOURCE);
        let etag = etag_of(body.as_bytes());
        Self {
            body: Bytes::from(body),
            etag,
        }
    }
}

impl Tracker {
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The script for any site (`Access-Control-Allow-Origin: *`), cached for an hour
    /// and revalidated by its `ETag`.
    pub fn serve(&self, request: &HeaderMap) -> Response<Body> {
        let mut response = cached_response(
            request,
            "application/javascript; charset=utf-8",
            &self.body,
            &self.etag,
            "public, max-age=3600",
        );
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings_and_needed_spaces() {
        let src = "// note\n var a = 'x  y' + \"q\\\" z\";\n  return  a + +b;\n";
        assert_eq!(minify(src), "var a='x  y'+\"q\\\" z\";return a+ +b;");
    }

    #[test]
    fn served_script_is_small_and_free_of_storage_before_consent() {
        let tracker = Tracker::default();
        let body = std::str::from_utf8(tracker.body()).expect("utf-8");
        assert!(body.len() < 2048, "tracker grew to {} bytes", body.len());
        assert!(
            !body.lines().any(|l| l.starts_with("//")),
            "comments are stripped"
        );
        assert!(
            !body.contains("document.cookie"),
            "the tracker never sets cookies"
        );
        // Every storage write sits behind the analytics-consent branch.
        let writes: Vec<_> = body.match_indices("setItem").map(|(i, _)| i).collect();
        let guard = body.find("if(an){").expect("the analytics-consent branch");
        let guard_end = guard + body[guard..].find('}').expect("branch end");
        assert!(!writes.is_empty());
        for at in writes {
            assert!(
                at > guard && at < guard_end,
                "storage write outside the consent branch at {at}"
            );
        }
    }
}
