//! When an identify event may link a visitor to a person: only with the consent the
//! form collected, provable afterwards. The processor applies this before it stores
//! the e-mail pseudonym; the ledger records a refusal with the same reason code.

use crate::wire::ConsentEvidence;

/// The longest e-mail address accepted (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

/// The address trimmed and lower-cased, if it is one: one `@`, a non-empty local
/// part, a dotted domain, no whitespace or control characters, at most
/// [`MAX_EMAIL`] bytes. The one rule for the collector (identify events) and for a
/// mailer's list (`spur subject resolve`), so both find the same subject.
pub fn normalized_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    ok.then_some(email)
}

/// The purposes consent can be given for.
pub const PURPOSES: [&str; 2] = ["analytics", "marketing"];

/// Why an identify event did not link the visitor to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The event carried no consent evidence at all.
    NoEvidence,
    /// The evidence names no known purpose (`analytics`, `marketing`).
    NoPurpose,
    /// Neither the consent text nor its id was recorded.
    NoConsentText,
    /// Neither the privacy-policy version nor its URL was recorded.
    NoPolicy,
    /// The page the form was on is unknown.
    NoSourcePage,
}

impl LinkRefusal {
    /// The reason code stored in the ledger (`link_refused` entries).
    pub fn code(self) -> &'static str {
        match self {
            LinkRefusal::NoEvidence => "no_consent_evidence",
            LinkRefusal::NoPurpose => "no_consent_purpose",
            LinkRefusal::NoConsentText => "no_consent_text",
            LinkRefusal::NoPolicy => "no_policy_reference",
            LinkRefusal::NoSourcePage => "no_source_page",
        }
    }
}

fn present(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.trim().is_empty())
}

/// Whether an identify event with this evidence, sent from `source_url`, may link
/// its visitor to the e-mail address: the evidence must name a known purpose, the
/// text shown (or its id), and the privacy policy (version or URL), and the source
/// page must be known. The time is the event's own.
pub fn link_verdict(
    evidence: Option<&ConsentEvidence>,
    source_url: Option<&str>,
) -> Result<(), LinkRefusal> {
    let evidence = evidence.ok_or(LinkRefusal::NoEvidence)?;
    if !evidence
        .purposes
        .iter()
        .any(|p| PURPOSES.contains(&p.as_str()))
    {
        return Err(LinkRefusal::NoPurpose);
    }
    if !present(evidence.text.as_deref()) && !present(evidence.text_id.as_deref()) {
        return Err(LinkRefusal::NoConsentText);
    }
    if !present(evidence.policy_version.as_deref()) && !present(evidence.policy_url.as_deref()) {
        return Err(LinkRefusal::NoPolicy);
    }
    if !present(source_url) {
        return Err(LinkRefusal::NoSourcePage);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ConsentEvidence {
        ConsentEvidence {
            purposes: vec!["marketing".into()],
            text_id: Some("newsletter-v3".into()),
            policy_version: Some("2026-01".into()),
            ..Default::default()
        }
    }

    #[test]
    fn complete_evidence_links() {
        assert_eq!(
            link_verdict(Some(&full()), Some("https://a.example/f")),
            Ok(())
        );
        let text = ConsentEvidence {
            text: Some("Send me news".into()),
            text_id: None,
            policy_url: Some("https://a.example/privacy".into()),
            policy_version: None,
            ..full()
        };
        assert_eq!(
            link_verdict(Some(&text), Some("https://a.example/f")),
            Ok(())
        );
    }

    #[test]
    fn each_missing_part_is_named() {
        let url = Some("https://a.example/f");
        assert_eq!(link_verdict(None, url), Err(LinkRefusal::NoEvidence));
        let no_purpose = ConsentEvidence {
            purposes: vec!["ads".into()],
            ..full()
        };
        assert_eq!(
            link_verdict(Some(&no_purpose), url),
            Err(LinkRefusal::NoPurpose)
        );
        let no_text = ConsentEvidence {
            text_id: Some("  ".into()),
            ..full()
        };
        assert_eq!(
            link_verdict(Some(&no_text), url),
            Err(LinkRefusal::NoConsentText)
        );
        let no_policy = ConsentEvidence {
            policy_version: None,
            ..full()
        };
        assert_eq!(
            link_verdict(Some(&no_policy), url),
            Err(LinkRefusal::NoPolicy)
        );
        assert_eq!(
            link_verdict(Some(&full()), None),
            Err(LinkRefusal::NoSourcePage)
        );
        assert_eq!(LinkRefusal::NoPolicy.code(), "no_policy_reference");
    }
}
