//! The HTTP API: routing and the handlers of every endpoint. The tracking endpoints
//! share one path ([`App::ingest`]): the site and origin checks, the consent
//! resolution, the geo lookup after which the IP is dropped, validation, delivery and
//! the accounting. Refusals are [`Rejection`]s, mapped to HTTP in [`crate::reply`].
//! `/v1/unsubscribe` (RFC 8058 one-click unsubscribe, [`crate::unsubscribe`]) and
//! `/v1/confirm` (the double opt-in link, [`crate::confirm`]) produce through the same
//! sink with the same guarantee: 200 only once the broker acknowledged. With
//! `collector.demo` on, `/demo/` serves the demo shop ([`crate::demo`]); off, those
//! paths are 404 like any unknown one.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use spur_schemas::DropReason;
use spur_schemas::confirm::Refused;
use spur_schemas::kafka::KafkaSettings;
use spur_schemas::record::{Agent, PrivacySignals};
use spur_schemas::wire::{Batch, ConsentFlags};

use crate::agent::AgentClassifier;
use crate::clock::ClockRules;
use crate::config::Config;
use crate::demo::Demo;
use crate::error::{Error, Result};
use crate::geo::{DatacenterLookup, GeoLookup};
use crate::ingest::Envelope;
use crate::ingest::{self, Context, Item};
use crate::metrics::{Metrics, UNKNOWN_SITE};
use crate::reply::{self, Body, Rejection, json_response, text_response};
use crate::salt::DailySalt;
use crate::scrub::{Redactions, Scrubbers};
use crate::sink::{SendFailure, Sink};
use crate::sites::{Site, Sites};
use crate::tracker::Tracker;
use crate::validate::{self, Rules};
use crate::{client_ip, compat, confirm, unsubscribe};

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub sites: Sites,
    pub sink: Sink,
    pub metrics: Arc<Metrics>,
    geo: GeoLookup,
    datacenters: DatacenterLookup,
    agents: AgentClassifier,
    salt: DailySalt,
    rules: Rules,
    clock: ClockRules,
    tracker: Tracker,
    /// The demo shop, when `collector.demo` is on.
    demo: Option<Demo>,
    shutting_down: AtomicBool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl App {
    pub fn new(config: Config, kafka: &KafkaSettings) -> Result<Self> {
        config.unsubscribe.validate().map_err(Error::Config)?;
        config.confirm.validate().map_err(Error::Config)?;
        let sites = Sites::new(&config.sites)?;
        let geo = GeoLookup::open(config.geoip.as_deref())?;
        let datacenters =
            DatacenterLookup::open(config.asn_database.as_deref(), &config.datacenter_asns)?;
        let salt = DailySalt::new(config.privacy.salt_dir.as_deref(), now_ms())?;
        let sink = Sink::new(kafka, &config.delivery)?;
        let rules = Rules {
            max_event_bytes: config.limits.max_event_bytes,
            allowed_query_params: config.privacy.allowed_query_params.clone(),
            scrub: Scrubbers::new(&config.privacy.scrub, &config.sites).map_err(Error::Config)?,
        };
        let clock = ClockRules {
            skew_tolerance: config.limits.clock_skew_tolerance,
            max_age: config.limits.max_event_age,
        };
        if config.demo && sites.get(crate::demo::SITE).is_none() {
            tracing::warn!(
                site = crate::demo::SITE,
                "the demo shop is on but its site is not registered: its events will be refused \
                 (add [[collector.sites]] id = \"demo\", hosts = [\"localhost\", \"127.0.0.1\"])"
            );
        }
        let demo = config.demo.then(Demo::default);
        Ok(Self {
            config,
            sites,
            sink,
            metrics: Arc::new(Metrics::default()),
            geo,
            datacenters,
            agents: AgentClassifier::default(),
            salt,
            rules,
            clock,
            tracker: Tracker::default(),
            demo,
            shutting_down: AtomicBool::new(false),
        })
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Serves one request. Never fails: every problem is an HTTP answer.
    pub async fn handle<B>(self: Arc<Self>, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let started = Instant::now();
        let (endpoint, result) = self.route(peer, req).await;
        let response = result.unwrap_or_else(Rejection::into_response);
        self.metrics
            .request(endpoint, response.status().as_u16(), started.elapsed());
        response
    }

    async fn route<B>(
        &self,
        peer: IpAddr,
        req: Request<B>,
    ) -> (&'static str, Result<Response<Body>, Rejection>)
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let get = method == Method::GET || method == Method::HEAD;
        match (path.as_str(), method) {
            ("/v1/batch", Method::POST) => ("batch", self.batch(peer, req).await),
            ("/api/event", Method::POST) => ("plausible", self.plausible(peer, req).await),
            ("/v1/batch" | "/api/event", Method::OPTIONS) => {
                ("preflight", self.preflight(req.headers()))
            }
            ("/v1/unsubscribe", method) => ("unsubscribe", self.unsubscribe(method, req).await),
            ("/v1/confirm", method) => {
                // A person's browser gets pages, refusals included.
                let json = confirm::wants_json(header(req.headers(), header::ACCEPT));
                let answer = self.confirm(method, req, json).await;
                (
                    "confirm",
                    Ok(answer.unwrap_or_else(|refusal| {
                        if json {
                            refusal.into_response()
                        } else {
                            refusal.into_page(confirm::refusal_page)
                        }
                    })),
                )
            }
            ("/p.gif", _) if get => ("pixel", self.pixel(peer, req).await),
            ("/spur.js", _) if get => ("tracker", Ok(self.tracker.serve(req.headers()))),
            ("/livez", _) if get => (
                "livez",
                Ok(text_response(StatusCode::OK, "text/plain", "ok\n")),
            ),
            ("/readyz", _) if get => ("readyz", Ok(self.readyz())),
            ("/metrics", _) if get => (
                "metrics",
                Ok(text_response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )),
            ),
            ("/v1/batch" | "/api/event", _) => (
                "other",
                Err(Rejection::MethodNotAllowed {
                    allow: "POST, OPTIONS",
                }),
            ),
            ("/p.gif" | "/spur.js" | "/livez" | "/readyz" | "/metrics", _) => (
                "other",
                Err(Rejection::MethodNotAllowed { allow: "GET, HEAD" }),
            ),
            (path, _) if Demo::owns(path) => match &self.demo {
                Some(demo) if get => ("demo", Ok(demo.serve(path, req.headers()))),
                Some(_) => (
                    "demo",
                    Err(Rejection::MethodNotAllowed { allow: "GET, HEAD" }),
                ),
                None => ("other", Err(Rejection::NotFound)),
            },
            _ => ("other", Err(Rejection::NotFound)),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let (status, body) = if self.shutting_down() {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        } else if !self.sink.is_up() {
            (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable\n")
        } else {
            (StatusCode::OK, "ready\n")
        };
        text_response(status, "text/plain", body)
    }

    /// CORS preflight for `application/json` posts. Allowed for origins of registered
    /// sites; never with credentials.
    fn preflight(&self, headers: &HeaderMap) -> Result<Response<Body>, Rejection> {
        let origin = header(headers, header::ORIGIN).ok_or(Rejection::OriginNotAllowed)?;
        if !self.sites.any_allows_origin(origin) {
            return Err(Rejection::OriginNotAllowed);
        }
        let mut response = text_response(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        let h = response.headers_mut();
        cors(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        Ok(response)
    }

    async fn read<B>(&self, req: Request<B>) -> Result<(HeaderMap, Bytes), Rejection>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let (parts, body) = req.into_parts();
        let media = header(&parts.headers, header::CONTENT_TYPE).map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        if !matches!(media.as_deref(), Some("application/json" | "text/plain")) {
            return Err(Rejection::UnsupportedMediaType);
        }
        let declared = header(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let limits = &self.config.limits;
        let body = reply::read_body(
            body,
            declared,
            limits.max_body_bytes,
            limits.body_read_timeout,
        )
        .await?;
        Ok((parts.headers, body))
    }

    async fn batch<B>(&self, peer: IpAddr, req: Request<B>) -> Result<Response<Body>, Rejection>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let (headers, body) = self.read(req).await?;
        let batch: Batch = decode_envelope(&body)?;
        let envelope = Envelope {
            site: batch.site,
            consent: batch.consent,
            visitor_id: batch.visitor_id,
            sent_at: batch.sent_at,
            events: batch.events,
        };
        let (accepted, dead) = self.ingest(envelope, &headers, peer).await?;
        let dead: Vec<_> = dead
            .iter()
            .map(|(index, reason, detail)| json!({ "index": index, "reason": reason, "detail": detail }))
            .collect();
        let mut response = json_response(
            StatusCode::ACCEPTED,
            &json!({ "accepted": accepted, "dead_lettered": dead }),
        );
        if let Some(origin) = header(&headers, header::ORIGIN) {
            cors(response.headers_mut(), origin);
        }
        Ok(response)
    }

    async fn plausible<B>(&self, peer: IpAddr, req: Request<B>) -> Result<Response<Body>, Rejection>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let (headers, body) = self.read(req).await?;
        let envelope = compat::plausible(&body, &self.sites)?;
        self.ingest(envelope, &headers, peer).await?;
        let mut response = text_response(StatusCode::ACCEPTED, "text/plain", "ok");
        if let Some(origin) = header(&headers, header::ORIGIN) {
            cors(response.headers_mut(), origin);
        }
        Ok(response)
    }

    async fn pixel<B>(&self, peer: IpAddr, req: Request<B>) -> Result<Response<Body>, Rejection> {
        let envelope = compat::pixel(
            req.uri().query().unwrap_or_default(),
            header(req.headers(), header::REFERER),
        )?;
        self.ingest(envelope, req.headers(), peer).await?;
        Ok(text_response(
            StatusCode::OK,
            "image/gif",
            Bytes::from_static(compat::GIF),
        ))
    }

    /// `POST /v1/unsubscribe?token=…` with `List-Unsubscribe=One-Click` (RFC 8058):
    /// one record withdrawing the marketing purpose of the subject the token names,
    /// answered 200 once the broker acknowledged it. Every other method is 405 (a link
    /// scanner's GET must not unsubscribe); without a key, everything is 404.
    ///
    /// The client address is not read at all. The event counters (received, accepted,
    /// dead-lettered, dropped) are per site and this record has none: the endpoint is
    /// counted only in `spur_collector_requests_total{endpoint="unsubscribe"}`.
    async fn unsubscribe<B>(
        &self,
        method: Method,
        req: Request<B>,
    ) -> Result<Response<Body>, Rejection>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let Some(key) = &self.config.unsubscribe.key else {
            return Err(Rejection::UnsubscribeDisabled);
        };
        if method != Method::POST {
            return Err(Rejection::OneClickOnly);
        }
        let subject = unsubscribe::token_param(req.uri().query())
            .and_then(|token| spur_schemas::unsubscribe::verify(key.expose().as_bytes(), &token))
            .ok_or(Rejection::InvalidToken)?;
        let (parts, body) = req.into_parts();
        let declared = header(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let body = reply::read_body(
            body,
            declared,
            unsubscribe::MAX_BODY_BYTES,
            self.config.limits.body_read_timeout,
        )
        .await?;
        unsubscribe::check_body(header(&parts.headers, header::CONTENT_TYPE), &body)
            .map_err(Rejection::NotOneClick)?;
        let retry_after = self.config.delivery.retry_after;
        if !self.sink.is_up() {
            return Err(Rejection::BrokerUnavailable { retry_after });
        }
        let record = unsubscribe::withdrawal(subject, now_ms());
        let outgoing = Item::Event(Box::new(record), Redactions::default()).to_outgoing();
        let results = self.sink.send_all(std::slice::from_ref(&outgoing)).await;
        if results.iter().any(Result::is_err) {
            let queue_full = results.iter().any(|r| r == &Err(SendFailure::QueueFull));
            tracing::warn!(queue_full, "unsubscribe not acknowledged by the broker");
            return Err(Rejection::NotAcknowledged {
                accepted: 0,
                retry_after,
            });
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({ "unsubscribed": true }),
        ))
    }

    /// `/v1/confirm?token=…`, the double opt-in link ([`crate::confirm`]). `GET` and
    /// `HEAD` verify the token and answer the page with the button, changing nothing;
    /// `POST` verifies it again and produces one record confirming the marketing grant
    /// the token names, answered 200 once the broker acknowledged it. Pages, or JSON
    /// when `json`.
    ///
    /// Like `/v1/unsubscribe`, the client address is not read and only
    /// `spur_collector_requests_total{endpoint="confirm"}` counts it.
    async fn confirm<B>(
        &self,
        method: Method,
        req: Request<B>,
        json: bool,
    ) -> Result<Response<Body>, Rejection>
    where
        B: hyper::body::Body + Unpin,
        B::Data: Into<Bytes>,
    {
        let Some(key) = &self.config.confirm.key else {
            return Err(Rejection::ConfirmDisabled);
        };
        let post = method == Method::POST;
        if !post && method != Method::GET && method != Method::HEAD {
            return Err(Rejection::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            });
        }
        let token = unsubscribe::token_param(req.uri().query()).unwrap_or_default();
        let confirmation = spur_schemas::confirm::verify(
            key.expose().as_bytes(),
            &token,
            now_ms().div_euclid(1000),
        )
        .map_err(|refused| match refused {
            Refused::Invalid => Rejection::ConfirmInvalid,
            Refused::Expired => Rejection::ConfirmExpired,
        })?;
        if !post {
            return Ok(if json {
                json_response(StatusCode::OK, &json!({ "valid": true }))
            } else {
                reply::html_response(StatusCode::OK, confirm::form_page())
            });
        }
        let (parts, body) = req.into_parts();
        let declared = header(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let body = reply::read_body(
            body,
            declared,
            confirm::MAX_BODY_BYTES,
            self.config.limits.body_read_timeout,
        )
        .await?;
        if !confirm::body_is_acceptable(header(&parts.headers, header::CONTENT_TYPE), &body) {
            return Err(Rejection::ConfirmNotForm);
        }
        let retry_after = self.config.delivery.retry_after;
        if !self.sink.is_up() {
            return Err(Rejection::BrokerUnavailable { retry_after });
        }
        let record = confirm::confirmation_record(&confirmation, now_ms());
        let outgoing = Item::Event(Box::new(record), Redactions::default()).to_outgoing();
        let results = self.sink.send_all(std::slice::from_ref(&outgoing)).await;
        if results.iter().any(Result::is_err) {
            let queue_full = results.iter().any(|r| r == &Err(SendFailure::QueueFull));
            tracing::warn!(queue_full, "confirmation not acknowledged by the broker");
            return Err(Rejection::NotAcknowledged {
                accepted: 0,
                retry_after,
            });
        }
        Ok(if json {
            json_response(StatusCode::OK, &json!({ "confirmed": true }))
        } else {
            reply::html_response(StatusCode::OK, confirm::confirmed_page())
        })
    }

    /// The shared tracking path. Returns the number of accepted events and the
    /// dead-lettered ones (index, reason, detail).
    pub async fn ingest(
        &self,
        envelope: Envelope,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<(usize, Vec<(u32, &'static str, String)>), Rejection> {
        let received_at = now_ms();
        let n = envelope.events.len() as u64;
        let site = self.sites.get(&envelope.site);
        let label = site.map_or(UNKNOWN_SITE, |s| s.id.as_str());
        self.metrics.received(label, n);
        let drop = |reason: DropReason, rejection: Rejection| {
            self.metrics.dropped(label, reason, n);
            rejection
        };
        let retry_after = self.config.delivery.retry_after;
        let Some(site) = site else {
            return Err(drop(DropReason::UnknownSite, Rejection::UnknownSite));
        };
        if !origin_allowed(site, headers) {
            return Err(drop(
                DropReason::OriginNotAllowed,
                Rejection::OriginNotAllowed,
            ));
        }
        let limit = self.config.limits.max_events_per_batch;
        if envelope.events.len() > limit {
            return Err(drop(
                DropReason::BatchTooLarge,
                Rejection::BatchTooLarge { limit },
            ));
        }
        let signals = PrivacySignals {
            gpc: header(headers, "sec-gpc").is_some_and(|v| v.trim() == "1"),
            dnt: header(headers, "dnt").is_some_and(|v| v.trim() == "1"),
        };
        let Some(consent) =
            ingest::resolve_consent(envelope.consent, signals, self.config.privacy.dnt)
        else {
            self.metrics.dropped(label, DropReason::DoNotTrack, n);
            return Ok((0, Vec::new()));
        };
        if !self.sink.is_up() {
            return Err(drop(
                DropReason::BrokerUnavailable,
                Rejection::BrokerUnavailable { retry_after },
            ));
        }
        let items = self.enrich_and_build(
            site,
            &envelope,
            headers,
            peer,
            consent,
            signals,
            received_at,
        );
        let outgoing: Vec<_> = items.iter().map(Item::to_outgoing).collect();
        let results = self.sink.send_all(&outgoing).await;
        let (mut accepted, mut dead, mut failed) = (0usize, Vec::new(), 0u64);
        for (item, result) in items.iter().zip(&results) {
            match (item, result) {
                (Item::Event(_, redactions), Ok(())) => {
                    accepted += 1;
                    self.metrics.redactions(redactions);
                }
                (Item::Dead(dl), Ok(())) => {
                    self.metrics.dead_lettered(label, dl.reason, 1);
                    dead.push((dl.index, dl.reason.as_str(), dl.detail.clone()));
                }
                (_, Err(_)) => failed += 1,
            }
        }
        self.metrics.accepted(label, accepted as u64);
        if failed > 0 {
            self.metrics
                .dropped(label, DropReason::NotAcknowledged, failed);
            let queue_full = results.iter().any(|r| r == &Err(SendFailure::QueueFull));
            tracing::warn!(
                site = label,
                failed,
                queue_full,
                "events not acknowledged by the broker"
            );
            return Err(Rejection::NotAcknowledged {
                accepted,
                retry_after,
            });
        }
        Ok((accepted, dead))
    }

    /// The user agent's classes and bot label; an agent that looks human but comes
    /// from a data-centre network is labelled `datacenter:AS<number>`.
    fn classify(&self, user_agent: &str, ip: IpAddr) -> Agent {
        let mut agent = self.agents.classify(user_agent);
        if agent.bot.is_none()
            && let Some(asn) = self.datacenters.datacenter_asn(ip)
        {
            agent.bot = Some(format!("datacenter:AS{asn}"));
        }
        agent
    }

    /// Everything that needs the client's address happens here; the address does not
    /// leave this function.
    #[allow(clippy::too_many_arguments)]
    fn enrich_and_build(
        &self,
        site: &Site,
        envelope: &Envelope,
        headers: &HeaderMap,
        peer: IpAddr,
        consent: ConsentFlags,
        signals: PrivacySignals,
        received_at: i64,
    ) -> Vec<Item> {
        let ip = client_ip::client_ip(
            peer,
            header(headers, "x-forwarded-for"),
            &self.config.trusted_proxies,
        );
        let user_agent = header(headers, header::USER_AGENT).unwrap_or_default();
        let ctx = Context {
            site,
            received_at,
            sent_at: envelope.sent_at.clone(),
            consent,
            signals,
            visitor_id: envelope.visitor_id.clone(),
            cookieless_id: self
                .salt
                .cookieless_id(&site.id, ip, user_agent, received_at),
            geo: self.geo.lookup(ip),
            agent: self.classify(user_agent, ip),
        };
        ingest::build(&ctx, &envelope.events, &self.rules, self.clock)
    }
}

/// A browser request must come from a registered host of the site: `Origin` when sent,
/// else `Referer`. Requests with neither (servers, the pixel in a mail client) pass;
/// their events' page URLs are still checked one by one.
fn origin_allowed(site: &Site, headers: &HeaderMap) -> bool {
    match (
        header(headers, header::ORIGIN),
        header(headers, header::REFERER),
    ) {
        (Some(origin), _) => site.allows_origin(origin),
        (None, Some(referer)) => site.allows_origin(referer),
        (None, None) => true,
    }
}

/// CORS for the tracking endpoints: the caller's origin echoed, never credentials.
fn cors(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Decodes a batch envelope; the error names the position and class, never a value.
pub fn decode_envelope(body: &[u8]) -> Result<Batch, Rejection> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let batch: Batch = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let path = e.path().to_string();
        let field = if ["site", "consent", "visitor_id", "sent_at", "events"]
            .iter()
            .any(|f| path.starts_with(f))
        {
            path.split(['.', '[']).next().unwrap_or_default().to_owned()
        } else {
            "body".to_owned()
        };
        // serde's "missing field `x`" names no value; every other message might.
        let text = inner.to_string();
        let class = match text.split(" at line").next() {
            Some(m) if m.starts_with("missing field") => m.to_owned(),
            _ => validate::json_error_class(inner).to_owned(),
        };
        Rejection::Malformed(format!(
            "invalid json at line {} column {}: {field}: {class}",
            inner.line(),
            inner.column()
        ))
    })?;
    de.end()
        .map_err(|_| Rejection::Malformed("trailing data after the json body".into()))?;
    Ok(batch)
}
