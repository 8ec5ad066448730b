//! One-click unsubscribe (RFC 8058), the pure parts: the token from the query, the
//! `List-Unsubscribe=One-Click` body, and the withdrawal record. The handler is
//! [`crate::api::App`]'s `/v1/unsubscribe` route; the token is
//! [`spur_schemas::unsubscribe`].
//!
//! The record names a person, not a browser: its visitor is the subject the token
//! names ([`VisitorKind::Subject`], stored unchanged by the processor), and its
//! `site_id` is empty, because an e-mail belongs to no site. It withdraws the
//! marketing purpose, with evidence `method: one_click_unsubscribe`. Nothing of the
//! request is kept: no IP, no user agent (the mail client's), no geography.

use spur_schemas::record::EventRecord;
use spur_schemas::unsubscribe::UNSUBSCRIBE_METHOD;
use spur_schemas::wire::{ConsentAction, ConsentEvidence};

use crate::ingest::{MARKETING, subject_marketing_record};

/// Largest accepted body: the form is 26 bytes, a multipart body a few hundred.
pub const MAX_BODY_BYTES: usize = 1024;

/// The form field and value RFC 8058 prescribes.
const FIELD: &str = "List-Unsubscribe";
const VALUE: &str = "One-Click";

/// The `token` query parameter (the first one, percent-decoded); also the confirmation
/// link's (`/v1/confirm`).
pub fn token_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Checks that the body is the one-click form: `List-Unsubscribe=One-Click` as
/// `application/x-www-form-urlencoded` (also assumed without a content type), or a
/// `multipart/form-data` field `List-Unsubscribe` with value `One-Click`. Other
/// fields are allowed beside it. The error is a sentence for the client.
pub fn check_body(content_type: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
    let media = content_type.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let found = match media.as_deref() {
        None | Some("application/x-www-form-urlencoded") => form_has_one_click(body),
        Some("multipart/form-data") => {
            let Some(boundary) = content_type.and_then(boundary) else {
                return Err("multipart/form-data without a boundary");
            };
            multipart_has_one_click(&boundary, body)
        }
        Some(_) => {
            return Err(
                "content-type must be application/x-www-form-urlencoded or multipart/form-data",
            );
        }
    };
    if found {
        Ok(())
    } else {
        Err("body must be List-Unsubscribe=One-Click")
    }
}

fn is_one_click(name: &str, value: &str) -> bool {
    name.trim().eq_ignore_ascii_case(FIELD) && value.trim().eq_ignore_ascii_case(VALUE)
}

fn form_has_one_click(body: &[u8]) -> bool {
    url::form_urlencoded::parse(body.trim_ascii()).any(|(k, v)| is_one_click(&k, &v))
}

/// The `boundary` parameter of a multipart content type, unquoted; 1 to 70
/// characters (RFC 2046).
fn boundary(content_type: &str) -> Option<String> {
    let value = parameter(content_type.split(';').skip(1), "boundary")?;
    (1..=70).contains(&value.len()).then_some(value)
}

/// Parameter `name` among `params` (`name=value` or `name="value"`), names compared
/// without case.
fn parameter<'a>(params: impl Iterator<Item = &'a str>, name: &str) -> Option<String> {
    params.filter_map(|p| p.split_once('=')).find_map(|(k, v)| {
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Whether a multipart body has the one-click field. A small parser: parts are split
/// at `--boundary`, each part's headers end at the first empty line, and the field
/// name comes from `Content-Disposition: form-data; name="…"`.
fn multipart_has_one_click(boundary: &str, body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    // Before the first delimiter is the preamble; after `--boundary--` the epilogue.
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.trim_start_matches([' ', '\t']);
        let part = part
            .strip_prefix("\r\n")
            .or_else(|| part.strip_prefix('\n'))
            .unwrap_or(part);
        let Some((headers, content)) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))
        else {
            continue;
        };
        let name = headers.lines().find_map(|line| {
            let (header, value) = line.split_once(':')?;
            if !header.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            parameter(value.split(';').skip(1), "name")
        });
        // The line break before the next delimiter belongs to the delimiter.
        let content = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(content);
        if name.is_some_and(|name| is_one_click(&name, content)) {
            return true;
        }
    }
    false
}

/// The record of a one-click unsubscribe by `subject_id` (verified from the token), at
/// `now` (ms since the epoch).
pub fn withdrawal(subject_id: String, now: i64) -> EventRecord {
    subject_marketing_record(
        subject_id,
        ConsentAction::Withdrawn,
        ConsentEvidence {
            purposes: vec![MARKETING.to_owned()],
            method: Some(UNSUBSCRIBE_METHOD.to_owned()),
            ..Default::default()
        },
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn token_from_the_query() {
        assert_eq!(token_param(Some("token=abc_-")).as_deref(), Some("abc_-"));
        assert_eq!(
            token_param(Some("x=1&token=a%2Db&token=c")).as_deref(),
            Some("a-b")
        );
        assert_eq!(token_param(Some("tokens=abc")), None);
        assert_eq!(token_param(Some("")), None);
        assert_eq!(token_param(None), None);
    }

    #[test]
    fn form_bodies() {
        assert_eq!(check_body(FORM, b"List-Unsubscribe=One-Click"), Ok(()));
        assert_eq!(
            check_body(
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                b"List-Unsubscribe=One-Click\r\n"
            ),
            Ok(())
        );
        assert_eq!(check_body(None, b"List-Unsubscribe=One-Click"), Ok(()));
        assert_eq!(check_body(FORM, b"a=b&List-Unsubscribe=One-Click"), Ok(()));
        assert_eq!(check_body(FORM, b"List-Unsubscribe=One%2DClick"), Ok(()));
        for bad in [
            &b""[..],
            b"List-Unsubscribe",
            b"List-Unsubscribe=",
            b"List-Unsubscribe=Two-Clicks",
            b"Unsubscribe=One-Click",
            b"\xff\xfe",
            b"{\"List-Unsubscribe\":\"One-Click\"}",
        ] {
            assert_eq!(
                check_body(FORM, bad),
                Err("body must be List-Unsubscribe=One-Click"),
                "{bad:?}"
            );
        }
        assert!(
            check_body(Some("application/json"), b"List-Unsubscribe=One-Click")
                .expect_err("refused")
                .starts_with("content-type")
        );
    }

    #[test]
    fn multipart_bodies() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert_eq!(
            check_body(Some("multipart/form-data; boundary=XyZ"), body),
            Ok(())
        );
        assert_eq!(
            check_body(Some("Multipart/Form-Data; BOUNDARY=\"XyZ\""), body),
            Ok(())
        );
        // Another field first, bare line feeds, a preamble and unquoted name.
        let other = b"preamble\n--b1\nContent-Disposition: form-data; name=\"x\"\n\nOne-Click\n--b1\ncontent-disposition: form-data; name=List-Unsubscribe\ncontent-type: text/plain\n\nOne-Click\n--b1--\n";
        assert_eq!(
            check_body(Some("multipart/form-data; boundary=b1"), other),
            Ok(())
        );
        let wrong_value = b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nYes\r\n--b--\r\n";
        let wrong_name =
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nOne-Click\r\n--b--\r\n";
        let after_end = b"--b--\r\n--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n";
        let no_blank_line =
            b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\nOne-Click";
        for bad in [
            &wrong_value[..],
            wrong_name,
            after_end,
            no_blank_line,
            b"",
            b"--b",
            b"--b--",
            b"List-Unsubscribe=One-Click",
        ] {
            assert!(
                check_body(Some("multipart/form-data; boundary=b"), bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            check_body(Some("multipart/form-data"), body),
            Err("multipart/form-data without a boundary")
        );
        assert_eq!(
            check_body(Some("multipart/form-data; boundary="), body),
            Err("multipart/form-data without a boundary")
        );
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        let types = [
            None,
            FORM,
            Some("multipart/form-data; boundary=b"),
            Some("multipart/form-data; boundary=\""),
            Some("multipart/form-data; boundary=é"),
            Some("text/plain"),
        ];
        let alphabet = b"-b\r\n=:;\"One-ClickList-Unsubscribe\xff";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..300 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for t in types {
                let _ = check_body(t, &body);
            }
        }
    }

    #[test]
    fn the_record_withdraws_marketing_for_the_subject() {
        let subject = "00112233445566778899aabbccddeeff";
        let record = withdrawal(subject.into(), 1_764_426_000_000);
        let json = serde_json::to_value(&record).expect("serialise");
        assert_eq!(json["site_id"], "");
        assert_eq!(
            json["visitor"],
            serde_json::json!({"kind": "subject", "id": subject})
        );
        assert_eq!(json["type"], "consent");
        assert_eq!(
            json["data"]["purposes"],
            serde_json::json!({"marketing": "withdrawn"})
        );
        assert_eq!(
            json["data"]["evidence"],
            serde_json::json!({"purposes": ["marketing"], "method": "one_click_unsubscribe"})
        );
        assert_eq!(
            json["consent"],
            serde_json::json!({"analytics": false, "marketing": false})
        );
        assert_eq!(json["received_at"], json["event_time"]);
        assert!(json.get("page").is_none());
        assert_eq!(
            json["geo"],
            serde_json::json!({"country": null, "region": null})
        );
        assert_ne!(
            withdrawal(subject.into(), 0).event_id,
            withdrawal(subject.into(), 0).event_id
        );
    }
}
