//! Personal data typed into free text, removed before anything is produced: e-mail
//! addresses, phone numbers, IBANs and payment card numbers in URL path segments,
//! kept query values, titles, referrers, topics, event and form names and property
//! values, and properties whose names announce personal data (`email`, `phone`,
//! `first_name`, …). A match is replaced by a fixed marker (`[email]`, `[phone]`,
//! `[iban]`, `[card]`): never hashed, since a hash of an address is still personal
//! data and links records. The event itself is kept; [`Redactions`] counts what was
//! replaced where (for the `redacted` flag and `spur_collector_redactions_total`),
//! never what it was.
//!
//! Pure and allocation-free when nothing matches: [`detect::needs`] answers most
//! texts in one pass over their bytes. `docs/privacy.md` says what is caught and what
//! cannot be.

pub mod detect;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use regex::Regex;
use serde_json::Value;

use crate::config::{ScrubConfig, ScrubPattern, SiteConfig};
pub use detect::{Detectors, Kind};

/// Where a redaction happened (the metric's `field` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// URL path segments (the `url` and `path` columns).
    Path,
    /// Values of the query parameters the allow-list keeps.
    Query,
    Title,
    Referrer,
    Props,
    Topics,
    /// A custom event's `name` or an identify event's `form`.
    Name,
}

impl Field {
    pub const COUNT: usize = 7;
    pub const ALL: [Field; Field::COUNT] = [
        Field::Path,
        Field::Query,
        Field::Title,
        Field::Referrer,
        Field::Props,
        Field::Topics,
        Field::Name,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Path => "path",
            Field::Query => "query",
            Field::Title => "title",
            Field::Referrer => "referrer",
            Field::Props => "props",
            Field::Topics => "topics",
            Field::Name => "name",
        }
    }
}

/// How many matches of each kind were replaced in each field of one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redactions {
    counts: [[u16; Kind::COUNT]; Field::COUNT],
}

impl Redactions {
    fn add(&mut self, field: Field, kind: Kind) {
        let cell = &mut self.counts[field as usize][kind as usize];
        *cell = cell.saturating_add(1);
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().flatten().all(|&n| n == 0)
    }

    /// Every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (Field, Kind, u64)> + '_ {
        Field::ALL.into_iter().flat_map(move |field| {
            Kind::ALL.into_iter().filter_map(move |kind| {
                let n = self.counts[field as usize][kind as usize];
                (n > 0).then_some((field, kind, u64::from(n)))
            })
        })
    }

    pub fn count(&self, field: Field, kind: Kind) -> u64 {
        u64::from(self.counts[field as usize][kind as usize])
    }
}

/// Property names (lower-cased, without `_`, `-`, `.` or spaces) whose values are
/// personal data whatever they look like: such properties are dropped whole.
const PERSONAL_NAMES: &[&str] = &[
    "name",
    "tel",
    "fax",
    "mail",
    "zip",
    "pwd",
    "pass",
    "pin",
    "ssn",
    "dob",
    "cvv",
    "cvc",
    "login",
    "username",
    "ip",
    "vorname",
    "nachname",
    "strasse",
    "telefon",
    "handy",
    "geburtsdatum",
    "anschrift",
];

/// Endings of property names that announce personal data (`customer_email`,
/// `billing_address`, `mobile_phone`).
const PERSONAL_ENDINGS: &[&str] = &[
    "email",
    "emailaddress",
    "phone",
    "phonenumber",
    "mobile",
    "telephone",
    "iban",
    "password",
    "passwd",
    "address",
    "street",
    "firstname",
    "lastname",
    "fullname",
    "surname",
    "givenname",
    "familyname",
    "middlename",
    "maidenname",
    "customername",
    "contactname",
    "billingname",
    "shippingname",
    "displayname",
    "realname",
    "birthday",
    "birthdate",
    "dateofbirth",
    "cardnumber",
    "creditcard",
    "ccnumber",
    "postaladdress",
    "ipaddress",
    "taxid",
    "passport",
    "nationalid",
];

/// Normalises a property name for the name rule: lower-case, only letters and digits.
fn normal_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The characters a path segment percent-encodes (the URL standard's path-segment
/// set: the path set plus `/` and `%`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// A site's own pattern.
#[derive(Debug)]
struct Pattern {
    regex: Regex,
    marker: String,
}

/// One site's scrubbing policy, compiled.
#[derive(Debug)]
pub struct Scrubber {
    detectors: Detectors,
    /// `Some(min_digits)` when identifiers in path segments are replaced.
    path_ids: Option<usize>,
    patterns: Vec<Pattern>,
    /// Whether the property-name rule applies (off only when scrubbing is disabled).
    names: bool,
    drop_props: Vec<String>,
    keep_props: Vec<String>,
}

impl Scrubber {
    /// A scrubber that changes nothing.
    pub fn disabled() -> Self {
        Self {
            detectors: Detectors::NONE,
            path_ids: None,
            patterns: Vec::new(),
            names: false,
            drop_props: Vec::new(),
            keep_props: Vec::new(),
        }
    }

    /// Compiles a policy; `what` names it in errors.
    fn new(policy: &Policy<'_>, what: &str) -> Result<Self, String> {
        if !policy.enabled {
            return Ok(Self::disabled());
        }
        let mut patterns = Vec::with_capacity(policy.patterns.len());
        for p in &policy.patterns {
            if p.name.is_empty()
                || p.name.len() > 32
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(format!(
                    "{what}: pattern name {:?} must be 1 to 32 of [a-z0-9_]",
                    p.name
                ));
            }
            let regex = regex::RegexBuilder::new(&p.regex)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{what}: pattern {}: {e}", p.name))?;
            if regex.is_match("") {
                return Err(format!("{what}: pattern {} matches the empty text", p.name));
            }
            patterns.push(Pattern {
                regex,
                marker: format!("[{}]", p.name),
            });
        }
        Ok(Self {
            detectors: policy.detectors,
            path_ids: policy.path_ids.then_some(policy.id_min_digits.max(1)),
            patterns,
            names: true,
            drop_props: policy.drop_props.iter().map(|n| normal_name(n)).collect(),
            keep_props: policy.keep_props.iter().map(|n| normal_name(n)).collect(),
        })
    }

    /// `text` with every match replaced by its marker; borrowed when nothing matched.
    pub fn text<'a>(&self, text: &'a str, field: Field, tally: &mut Redactions) -> Cow<'a, str> {
        let needs = detect::needs(text, self.detectors);
        if !needs.any() && self.patterns.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut spans = Vec::new();
        detect::find(text, self.detectors, needs, &mut spans);
        for (index, pattern) in self.patterns.iter().enumerate() {
            spans.extend(
                pattern
                    .regex
                    .find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| detect::Span {
                        start: m.start(),
                        end: m.end(),
                        kind: Kind::Pattern,
                        pattern: index,
                    }),
            );
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        // Earliest first, the longest of those starting together; overlaps lose.
        spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for span in spans {
            if span.start < pos {
                continue;
            }
            out.push_str(&text[pos..span.start]);
            out.push_str(match span.kind {
                Kind::Pattern => &self.patterns[span.pattern].marker,
                kind => kind.marker(),
            });
            tally.add(field, span.kind);
            pos = span.end;
        }
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    }

    /// A percent-encoded URL path with each segment scrubbed (decoded first, so
    /// `alice%40example.com` is found) and, when configured, identifier segments
    /// replaced by `[id]`. Unchanged segments keep their exact bytes.
    pub fn path<'a>(&self, path: &'a str, field: Field, tally: &mut Redactions) -> Cow<'a, str> {
        let mut out: Option<String> = None;
        let mut start = 0;
        for segment in path.split('/') {
            if let Some(out) = out.as_mut() {
                out.push('/');
            }
            match self.segment(segment, field, tally) {
                Some(new) => out
                    .get_or_insert_with(|| path[..start].to_owned())
                    .push_str(&new),
                None => {
                    if let Some(out) = out.as_mut() {
                        out.push_str(segment);
                    }
                }
            }
            start += segment.len() + 1;
        }
        out.map_or(Cow::Borrowed(path), Cow::Owned)
    }

    /// One percent-encoded path segment's replacement, when it has one.
    fn segment(&self, segment: &str, field: Field, tally: &mut Redactions) -> Option<String> {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        if self
            .path_ids
            .is_some_and(|min| detect::is_id_segment(&decoded, min))
        {
            tally.add(field, Kind::Id);
            return Some(Kind::Id.marker().to_owned());
        }
        match self.text(&decoded, field, tally) {
            Cow::Owned(s) => Some(utf8_percent_encode(&s, SEGMENT).to_string()),
            Cow::Borrowed(_) => None,
        }
    }

    /// Whether a property's name announces personal data.
    fn personal_name(&self, name: &str) -> bool {
        let name = normal_name(name);
        if self.keep_props.contains(&name) {
            return false;
        }
        self.drop_props.contains(&name)
            || PERSONAL_NAMES.contains(&name.as_str())
            || PERSONAL_ENDINGS.iter().any(|e| name.ends_with(e))
    }

    /// Drops properties whose names announce personal data (or contain it) and
    /// scrubs string values and long numbers (a card number sent as a JSON number).
    pub fn props(&self, props: &mut BTreeMap<String, Value>, tally: &mut Redactions) {
        if !self.names && self.patterns.is_empty() && self.detectors == Detectors::NONE {
            return;
        }
        props.retain(|name, _| {
            if self.names && self.personal_name(name) {
                tally.add(Field::Props, Kind::Property);
                return false;
            }
            // A name that itself holds an address or a number goes whole.
            let mut found = Redactions::default();
            let clean = matches!(self.text(name, Field::Props, &mut found), Cow::Borrowed(_));
            if !clean {
                for (_, kind, n) in found.iter() {
                    for _ in 0..n {
                        tally.add(Field::Props, kind);
                    }
                }
            }
            clean
        });
        for value in props.values_mut() {
            match value {
                Value::String(s) => {
                    if let Cow::Owned(new) = self.text(s, Field::Props, tally) {
                        *s = new;
                    }
                }
                Value::Number(n) if n.as_u64().is_some_and(|v| v >= 10_000_000) => {
                    let digits = n.to_string();
                    if let Cow::Owned(new) = self.text(&digits, Field::Props, tally) {
                        *value = Value::String(new);
                    }
                }
                _ => {}
            }
        }
    }
}

/// One site's settings after its overrides were applied.
struct Policy<'a> {
    enabled: bool,
    detectors: Detectors,
    path_ids: bool,
    id_min_digits: usize,
    drop_props: Vec<&'a String>,
    keep_props: Vec<&'a String>,
    patterns: Vec<&'a ScrubPattern>,
}

impl<'a> Policy<'a> {
    fn global(c: &'a ScrubConfig) -> Self {
        Self {
            enabled: c.enabled,
            detectors: Detectors {
                email: c.email,
                phone: c.phone,
                iban: c.iban,
                card: c.card,
            },
            path_ids: c.path_ids,
            id_min_digits: c.id_min_digits,
            drop_props: c.drop_props.iter().collect(),
            keep_props: c.keep_props.iter().collect(),
            patterns: c.patterns.iter().collect(),
        }
    }
}

/// Every site's compiled scrubber.
#[derive(Clone, Debug)]
pub struct Scrubbers {
    default: Arc<Scrubber>,
    sites: HashMap<String, Arc<Scrubber>>,
}

impl Default for Scrubbers {
    fn default() -> Self {
        Self::new(&ScrubConfig::default(), &[]).expect("the default policy compiles")
    }
}

impl Scrubbers {
    /// Compiles the global policy and each site's overrides; overrides for a site
    /// that is not registered are refused (a typo would silently keep the default).
    pub fn new(config: &ScrubConfig, sites: &[SiteConfig]) -> Result<Self, String> {
        let default = Arc::new(Scrubber::new(&Policy::global(config), "privacy.scrub")?);
        let mut by_site = HashMap::new();
        for (site, o) in &config.sites {
            if !sites.iter().any(|s| &s.id == site) {
                return Err(format!(
                    "privacy.scrub.sites.{site}: no site with that id is registered"
                ));
            }
            let mut policy = Policy::global(config);
            policy.enabled = o.enabled.unwrap_or(policy.enabled);
            let d = &mut policy.detectors;
            d.email = o.email.unwrap_or(d.email);
            d.phone = o.phone.unwrap_or(d.phone);
            d.iban = o.iban.unwrap_or(d.iban);
            d.card = o.card.unwrap_or(d.card);
            policy.path_ids = o.path_ids.unwrap_or(policy.path_ids);
            policy.id_min_digits = o.id_min_digits.unwrap_or(policy.id_min_digits);
            policy.drop_props.extend(&o.drop_props);
            policy.keep_props.extend(&o.keep_props);
            policy.patterns.extend(&o.patterns);
            let what = format!("privacy.scrub.sites.{site}");
            by_site.insert(site.clone(), Arc::new(Scrubber::new(&policy, &what)?));
        }
        Ok(Self {
            default,
            sites: by_site,
        })
    }

    /// The scrubber of `site` (the global one unless it has overrides).
    pub fn for_site(&self, site: &str) -> &Scrubber {
        self.sites.get(site).unwrap_or(&self.default)
    }
}
