//! Double opt-in confirmation (`/v1/confirm?token=…`), the pure parts: the pages, the
//! body check and the confirming record. The handler is [`crate::api::App`]'s
//! `/v1/confirm` route; the token is [`spur_schemas::confirm`] (key and validity in
//! `[confirm]`).
//!
//! - `GET`/`HEAD` verify the token and answer a small page whose button POSTs to the
//!   same URL. Nothing changes: mail scanners and link previews open links.
//! - `POST` (empty body or a form) verifies the token again and produces one consent
//!   record granting `marketing`, with evidence `{purposes: ["marketing"],
//!   confirmation: true, method: "double_opt_in_link", grant_seq}`; the ledger
//!   records it as `confirm` when the grant it names is still the subject's latest.
//!   The answer (200, "confirmed") comes only after the broker acknowledged the
//!   record; otherwise 503 with `Retry-After` and a button to try again.
//! - A forged or altered token is 403 `invalid_token` ("this confirmation link is not
//!   valid"), an expired one 403 `expired_token` ("… has expired; sign up again to get
//!   a new one"); without `confirm.key` the endpoint is 404 `confirm_disabled`; other
//!   methods 405.
//!
//! Pages are self-contained HTML (no script, no external resource) under a strict
//! `Content-Security-Policy`, never cached, indexed or sent as a referrer
//! ([`crate::reply::html_response`]). A client that asks for `application/json` (and
//! not HTML) gets JSON instead: `{"valid": true}`, `{"confirmed": true}` or the usual
//! `{"error", "message"}`.
//!
//! Like the unsubscribe withdrawal ([`crate::unsubscribe`]) the record names a person,
//! not a browser: visitor kind `subject` with the token's subject id,
//! an empty `site_id`, and nothing of the request (no IP, user agent or geography).

use spur_schemas::confirm::{Confirmation, DOUBLE_OPT_IN_METHOD};
use spur_schemas::record::EventRecord;
use spur_schemas::wire::{ConsentAction, ConsentEvidence};

use crate::ingest::{MARKETING, subject_marketing_record};
use crate::reply::PAGE_STYLE;

/// Largest accepted body: the page's form sends `confirm=yes`.
pub const MAX_BODY_BYTES: usize = 1024;

/// Whether the client asked for JSON rather than a page: its `Accept` names
/// `application/json` and not `text/html` (browsers always name `text/html`).
pub fn wants_json(accept: Option<&str>) -> bool {
    let media: Vec<String> = accept
        .unwrap_or_default()
        .split(',')
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    media.iter().any(|m| m == "application/json") && !media.iter().any(|m| m == "text/html")
}

/// Checks a confirmation POST's body: empty (with any content type), or a form
/// (`application/x-www-form-urlencoded`, `multipart/form-data`, or no content type).
/// Its fields are not read: the token in the URL is the whole authorisation.
pub fn body_is_acceptable(content_type: Option<&str>, body: &[u8]) -> bool {
    if body.trim_ascii().is_empty() {
        return true;
    }
    let media = content_type.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    matches!(
        media.as_deref(),
        None | Some("application/x-www-form-urlencoded" | "multipart/form-data")
    )
}

/// The record of a confirmed double opt-in, at `now` (ms since the epoch).
pub fn confirmation_record(confirmation: &Confirmation, now: i64) -> EventRecord {
    subject_marketing_record(
        confirmation.subject_id.clone(),
        ConsentAction::Granted,
        ConsentEvidence {
            purposes: vec![MARKETING.to_owned()],
            confirmation: true,
            method: Some(DOUBLE_OPT_IN_METHOD.to_owned()),
            grant_seq: Some(confirmation.grant_seq),
            ..Default::default()
        },
        now,
    )
}

/// The button that POSTs the confirmation. The form has no `action`: it posts to the
/// page's own URL, token included, whatever path a proxy serves it under.
const FORM: &str = r#"<form method="post"><button type="submit" name="confirm" value="yes">Confirm my subscription</button></form>"#;

/// The page a valid link opens: an explanation and the button.
pub fn form_page() -> String {
    page(
        "Confirm your subscription",
        &format!(
            "<p>Press the button to confirm that you want to receive our e-mails.</p>{FORM}\
             <p class=\"note\">If you did not sign up, close this page: nothing changes \
             unless the button is pressed.</p>"
        ),
    )
}

/// The page after the confirmation was stored.
pub fn confirmed_page() -> String {
    page(
        "Subscription confirmed",
        "<p>Thank you: your subscription is confirmed. You can unsubscribe at any time \
         with the link in every e-mail.</p>",
    )
}

/// The page of a refusal with `code` and `message` ([`crate::reply::Rejection`]).
/// When the broker could not take the confirmation, the page offers the button again.
pub fn refusal_page(code: &str, message: &str) -> String {
    match code {
        "broker_unavailable" | "not_acknowledged" => page(
            "Please try again",
            &format!(
                "<p>Your confirmation could not be saved right now. Please try again in a \
                 minute.</p>{FORM}"
            ),
        ),
        "invalid_token" | "expired_token" => page(
            "This link cannot be used",
            &format!(
                "<p>{}.</p>",
                capitalised(&crate::reply::escape_html(message))
            ),
        ),
        _ => page(
            "Request refused",
            &format!(
                "<p>{}.</p>",
                capitalised(&crate::reply::escape_html(message))
            ),
        ),
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>{PAGE_STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>\n"
    )
}

/// The sentence with its first letter in upper case (error messages are lower case).
fn capitalised(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_only_when_asked_for_and_html_not_named() {
        assert!(wants_json(Some("application/json")));
        assert!(wants_json(Some("Application/JSON; q=1, */*;q=0.1")));
        assert!(!wants_json(None));
        assert!(!wants_json(Some("*/*")));
        assert!(!wants_json(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!wants_json(Some("text/html, application/json")));
    }

    #[test]
    fn bodies() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(body_is_acceptable(None, b""));
        assert!(body_is_acceptable(Some("application/json"), b""));
        assert!(body_is_acceptable(form, b"confirm=yes"));
        assert!(body_is_acceptable(
            Some("Multipart/Form-Data; boundary=b"),
            b"--b--"
        ));
        assert!(body_is_acceptable(None, b"confirm=yes"));
        assert!(!body_is_acceptable(Some("application/json"), b"{}"));
        assert!(!body_is_acceptable(Some("text/plain"), b"confirm=yes"));
    }

    #[test]
    fn the_record_confirms_the_grant_for_the_subject() {
        let subject = "00112233445566778899aabbccddeeff";
        let confirmation = Confirmation {
            subject_id: subject.into(),
            grant_seq: 41,
            expires_at: 2_000_000_000,
        };
        let record = confirmation_record(&confirmation, 1_764_426_000_000);
        let json = serde_json::to_value(&record).expect("serialise");
        assert_eq!(json["site_id"], "");
        assert_eq!(
            json["visitor"],
            serde_json::json!({"kind": "subject", "id": subject})
        );
        assert_eq!(json["type"], "consent");
        assert_eq!(
            json["data"]["purposes"],
            serde_json::json!({"marketing": "granted"})
        );
        assert_eq!(
            json["data"]["evidence"],
            serde_json::json!({
                "purposes": ["marketing"],
                "confirmation": true,
                "method": DOUBLE_OPT_IN_METHOD,
                "grant_seq": 41
            })
        );
        assert_eq!(
            json["geo"],
            serde_json::json!({"country": null, "region": null})
        );
        assert!(json.get("page").is_none());
        assert_eq!(json["received_at"], json["event_time"]);
        assert_ne!(
            confirmation_record(&confirmation, 0).event_id,
            confirmation_record(&confirmation, 0).event_id
        );
    }

    #[test]
    fn pages_are_self_contained() {
        let pages = [
            form_page(),
            confirmed_page(),
            refusal_page("invalid_token", "this confirmation link is not valid"),
            refusal_page("not_acknowledged", "3 events were stored"),
            refusal_page("x", "<script>alert(1)</script>"),
        ];
        for page in &pages {
            assert!(page.starts_with("<!doctype html>"), "{page}");
            for external in ["<script", "src=", "href=", "http:", "https:", "<link"] {
                assert!(!page.contains(external), "{external} in {page}");
            }
            assert_eq!(page.matches("<style>").count(), 1);
            assert!(page.contains(&format!("<style>{PAGE_STYLE}</style>")));
        }
        // The form posts to the page's own URL, with a button.
        assert!(pages[0].contains(r#"<form method="post"><button type="submit""#));
        assert!(!pages[0].contains("action="));
        assert!(!pages[1].contains("<form"));
        assert!(pages[2].contains("This confirmation link is not valid."));
        assert!(!pages[2].contains("<form"));
        assert!(
            pages[3].contains("<form"),
            "the broker refusal offers a retry"
        );
        assert!(pages[4].contains("&lt;script&gt;"));
    }
}
