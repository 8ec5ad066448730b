//! The other ways in: the 1×1 GIF pixel (`GET /p.gif?…`, for no-JS pages and e-mail
//! opens) and Plausible's `POST /api/event`. Both are turned into the same
//! [`Envelope`] the JSON batch endpoint produces, so they share every check.
//!
//! Pixel parameters: `s` site, `t` type (default `pageview`), `u` page URL (default:
//! the `Referer`), `r` referrer, `id`, `ts`, `n` custom event name, `title`, and
//! `p.<key>` custom properties. No consent can be expressed through the pixel, so its
//! events always get the cookieless id and no marketing purpose.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ingest::Envelope;
use crate::reply::Rejection;
use crate::sites::Sites;

/// The smallest transparent 1×1 GIF.
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn raw(value: Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("a serde_json value is valid json")
}

/// The envelope of a pixel request.
pub fn pixel(query: &str, referer: Option<&str>) -> Result<Envelope, Rejection> {
    let mut site = None;
    let mut event = Map::new();
    let mut props = Map::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = Value::String(v.into_owned());
        match k.as_ref() {
            "s" => site = v.as_str().map(str::to_owned),
            "t" => drop(event.insert("type".into(), v)),
            "u" => drop(event.insert("url".into(), v)),
            "r" => drop(event.insert("referrer".into(), v)),
            "n" => drop(event.insert("name".into(), v)),
            "id" => drop(event.insert("id".into(), v)),
            "title" => drop(event.insert("title".into(), v)),
            "ts" => {
                let n = v
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map_or(v, Value::from);
                event.insert("ts".into(), n);
            }
            key => {
                if let Some(prop) = key.strip_prefix("p.") {
                    props.insert(prop.to_owned(), v);
                }
            }
        }
    }
    let site =
        site.ok_or_else(|| Rejection::Malformed("missing query parameter s (site)".into()))?;
    event
        .entry("type")
        .or_insert_with(|| Value::from("pageview"));
    if let Some(referer) = referer {
        event.entry("url").or_insert_with(|| Value::from(referer));
    }
    if !props.is_empty() {
        event.insert("props".into(), Value::Object(props));
    }
    Ok(Envelope {
        site,
        consent: None,
        visitor_id: None,
        sent_at: None,
        events: vec![raw(Value::Object(event))],
    })
}

/// Plausible's event body.
#[derive(Debug, Deserialize)]
struct PlausibleEvent {
    name: String,
    url: String,
    domain: String,
    #[serde(default)]
    referrer: Option<String>,
    #[serde(default)]
    props: Option<BTreeMap<String, Value>>,
}

/// The envelope of a Plausible `/api/event` request. `domain` selects the site (the
/// first of Plausible's comma-separated domains that is a registered host).
pub fn plausible(body: &[u8], sites: &Sites) -> Result<Envelope, Rejection> {
    let ev: PlausibleEvent = serde_json::from_slice(body).map_err(|e| {
        Rejection::Malformed(format!(
            "invalid plausible event: {}",
            crate::validate::json_error_class(&e)
        ))
    })?;
    let site = ev
        .domain
        .split(',')
        .find_map(|d| sites.by_host(d.trim()))
        .map(|s| s.id.clone())
        .ok_or(Rejection::UnknownSite)?;
    let mut event = Map::new();
    if ev.name == "pageview" {
        event.insert("type".into(), "pageview".into());
    } else {
        event.insert("type".into(), "custom".into());
        event.insert("name".into(), ev.name.into());
    }
    event.insert("url".into(), ev.url.into());
    if let Some(r) = ev.referrer {
        event.insert("referrer".into(), r.into());
    }
    if let Some(props) = ev.props {
        event.insert("props".into(), Value::Object(props.into_iter().collect()));
    }
    Ok(Envelope {
        site,
        consent: None,
        visitor_id: None,
        sent_at: None,
        events: vec![raw(Value::Object(event))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;

    #[test]
    fn pixel_query_becomes_an_event() {
        let env = pixel(
            "s=shop&t=custom&n=email_open&p.campaign=nov&ts=1764426000000",
            Some("https://shop.example/x"),
        )
        .expect("envelope");
        assert_eq!(env.site, "shop");
        let ev: Value = serde_json::from_str(env.events[0].get()).expect("json");
        assert_eq!(ev["type"], "custom");
        assert_eq!(ev["name"], "email_open");
        assert_eq!(ev["props"]["campaign"], "nov");
        assert_eq!(ev["ts"], 1_764_426_000_000_i64);
        assert_eq!(ev["url"], "https://shop.example/x");
        assert!(pixel("t=pageview", None).is_err());
    }

    #[test]
    fn plausible_domain_selects_the_site() {
        let sites = Sites::new(&[SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into()],
        }])
        .expect("sites");
        let env = plausible(br#"{"name":"signup","url":"https://shop.example/a","domain":"other.example,shop.example"}"#, &sites)
            .expect("envelope");
        assert_eq!(env.site, "shop");
        let ev: Value = serde_json::from_str(env.events[0].get()).expect("json");
        assert_eq!(ev["type"], "custom");
        assert_eq!(ev["name"], "signup");
        assert_eq!(
            plausible(
                br#"{"name":"pageview","url":"https://x.example/","domain":"x.example"}"#,
                &sites
            )
            .map(|_| ()),
            Err(Rejection::UnknownSite)
        );
    }
}
