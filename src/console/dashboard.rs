//! The dashboard: what the pipeline did lately, on one page that reloads every 5 s.
//!
//! The lake's numbers come from the analysts' SQL layer (`spur_query::Catalog`, the
//! same tables, views and read-only guard as `spur sql` and `spur serve-sql`); the
//! queries are the constants below, so what the page shows can be checked in `psql`.
//! Until the processor has created the lake the page says "no data yet" and tries
//! again at the next reload.
//!
//! Two numbers are not in the lake and come from the services' Prometheus
//! endpoints: the processor's lag (`spur_processor_lag_records`, records in Kafka
//! not yet committed to the lake, summed over its partitions) and the dead letters
//! (`spur_collector_events_dead_lettered_total` and
//! `spur_processor_dead_lettered_total` by reason). Dead letters go to the topic
//! `spur.deadletter.v1`, never to the lake; the counters count them since each
//! process started, which the page says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt as _;
use spur_lake::read::{int64s, strings};
use spur_query::Catalog;
use spur_schemas::error_chain;
use spur_schemas::time::date;

use super::esc;
use super::svg::{self, Series};

/// How long a `/metrics` request may take before the page is drawn without it.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// Lines in the top lists and the latest changes.
const TOP: usize = 8;
const LATEST: usize = 12;

/// The dashboard's sources.
#[derive(Debug)]
pub(super) struct Dashboard {
    lake_root: String,
    /// Opened at the first request that finds the lake.
    catalog: tokio::sync::Mutex<Option<Arc<Catalog>>>,
    client: reqwest::Client,
    processor_metrics_url: Option<String>,
    collector_url: String,
}

/// What the lake says, each part on its own (one failing query leaves the rest).
#[derive(Debug)]
pub(super) struct LakeData {
    /// Events per minute, `(unix minute, events, of which bots)`, for the minutes
    /// that had any.
    pub per_minute: Result<Vec<(i64, i64, i64)>, String>,
    pub pages: Result<Vec<(String, i64)>, String>,
    pub topics: Result<Vec<(String, i64)>, String>,
    /// Human pageviews of the last 24 h and how many carried each purpose's consent.
    pub consent: Result<Consent, String>,
    /// Marketing entries of the consent ledger by kind (`grant`, `confirm`, …).
    pub ledger: Result<Vec<(String, i64)>, String>,
    /// Net membership change per `(segment, unix minute)`, in that order.
    pub sizes: Result<Vec<(String, i64, i64)>, String>,
    pub changes: Result<Vec<ChangeLine>, String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Consent {
    pub pageviews: i64,
    pub analytics: i64,
    pub marketing: i64,
}

#[derive(Debug, Clone)]
pub(super) struct ChangeLine {
    pub seq: i64,
    pub at_secs: i64,
    pub segment: String,
    pub subject_id: String,
    pub change: String,
    pub reason: String,
}

/// The numbers from the services' `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Summed over partitions; `None` without a processor metrics URL.
    pub lag: Option<Result<f64, String>>,
    /// Reason → (collector, processor).
    pub dead_letters: BTreeMap<String, (f64, f64)>,
    /// Sources that could not be read, with why.
    pub unreadable: Vec<String>,
}

impl Dashboard {
    pub(super) fn new(
        lake_root: String,
        processor_metrics_url: Option<String>,
        collector_url: String,
    ) -> anyhow::Result<Dashboard> {
        let client = reqwest::Client::builder()
            .timeout(METRICS_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("the dashboard's HTTP client: {}", error_chain(&e)))?;
        Ok(Dashboard {
            lake_root,
            catalog: tokio::sync::Mutex::new(None),
            client,
            processor_metrics_url,
            collector_url: collector_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The page as of `now_ms`.
    pub(super) async fn page(&self, now_ms: i64) -> String {
        let (lake, counters) = tokio::join!(self.lake(now_ms), self.counters());
        render(
            &lake,
            &counters,
            &self.lake_root,
            &self.collector_url,
            now_ms,
        )
    }

    /// The catalog, opened now if the lake has appeared since the last look.
    async fn catalog(&self) -> Result<Arc<Catalog>, String> {
        let mut catalog = self.catalog.lock().await;
        if let Some(catalog) = catalog.as_ref() {
            return Ok(catalog.clone());
        }
        let opened = Catalog::open(
            &self.lake_root,
            &spur_audience::LifecycleConfig::default(),
            &spur_query::Config::default(),
        )
        .await
        .map_err(|e| error_chain(&e))?;
        Ok(catalog.insert(Arc::new(opened)).clone())
    }

    /// The lake's numbers as of `now_ms`, or why there are none.
    pub(super) async fn lake(&self, now_ms: i64) -> Result<LakeData, String> {
        let catalog = self.catalog().await?;
        let now = now_ms.div_euclid(1000);
        let minute = now.div_euclid(60);
        let hour_ago = (minute - 59) * 60;
        let day_ago = now - 86_400;
        // `dt` first: only the partitions of the window are read.
        let hour = format!(
            "dt >= '{}' AND to_unixtime(event_time) >= {hour_ago} AND to_unixtime(event_time) < {}",
            date(hour_ago * 1000),
            (minute + 1) * 60
        );
        let day = format!(
            "dt >= '{}' AND to_unixtime(event_time) >= {day_ago} AND to_unixtime(event_time) <= {now} \
             AND event_type = 'pageview' AND NOT is_bot",
            date(day_ago * 1000)
        );
        let q = |sql: String| {
            let catalog = catalog.clone();
            async move { query(&catalog, &sql).await }
        };
        let (per_minute, pages, topics, consent, ledger, sizes, changes) = tokio::join!(
            q(format!(
                "SELECT to_unixtime(event_time) / 60 AS minute, count(*) AS events, \
                 sum(CASE WHEN is_bot THEN 1 ELSE 0 END) AS bots \
                 FROM events WHERE {hour} GROUP BY 1 ORDER BY 1"
            )),
            q(format!(
                "SELECT path, count(*) AS views FROM events WHERE {day} AND path IS NOT NULL \
                 GROUP BY path ORDER BY views DESC, path LIMIT {TOP}"
            )),
            q(format!(
                "SELECT topic, count(*) AS views FROM \
                 (SELECT unnest(topics) AS topic FROM events WHERE {day}) t \
                 GROUP BY topic ORDER BY views DESC, topic LIMIT {TOP}"
            )),
            q(format!(
                "SELECT count(*) AS pageviews, \
                 sum(CASE WHEN consent_analytics THEN 1 ELSE 0 END) AS analytics, \
                 sum(CASE WHEN consent_marketing THEN 1 ELSE 0 END) AS marketing \
                 FROM events WHERE {day}"
            )),
            q(
                "SELECT kind, count(*) AS n FROM ledger WHERE purpose = 'marketing' \
               GROUP BY kind ORDER BY kind"
                    .to_owned()
            ),
            q("SELECT segment, to_unixtime(at) / 60 AS minute, \
               sum(CASE WHEN change = 'entered' THEN 1 ELSE -1 END) AS net \
               FROM segment_changes WHERE change IN ('entered', 'exited') \
               GROUP BY 1, 2 ORDER BY 1, 2"
                .to_owned()),
            q(format!(
                "SELECT seq, to_unixtime(at) AS at_s, segment, subject_id, change, reason \
                 FROM segment_changes ORDER BY seq DESC LIMIT {LATEST}"
            )),
        );
        Ok(LakeData {
            per_minute: per_minute.and_then(|b| {
                let mut out = Vec::new();
                for batch in &b {
                    let (m, e, bots) = (
                        ints(batch, "minute")?,
                        ints(batch, "events")?,
                        ints(batch, "bots")?,
                    );
                    out.extend((0..m.len()).map(|i| (m[i], e[i], bots[i])));
                }
                Ok(out)
            }),
            pages: pages.and_then(|b| named_counts(&b, "path", "views")),
            topics: topics.and_then(|b| named_counts(&b, "topic", "views")),
            consent: consent.and_then(|b| {
                let mut consent = Consent::default();
                for batch in &b {
                    for (field, column) in [
                        (&mut consent.pageviews, "pageviews"),
                        (&mut consent.analytics, "analytics"),
                        (&mut consent.marketing, "marketing"),
                    ] {
                        *field += ints(batch, column)?.iter().sum::<i64>();
                    }
                }
                Ok(consent)
            }),
            ledger: ledger.and_then(|b| named_counts(&b, "kind", "n")),
            sizes: sizes.and_then(|b| {
                let mut out = Vec::new();
                for batch in &b {
                    let (s, m, n) = (
                        texts(batch, "segment")?,
                        ints(batch, "minute")?,
                        ints(batch, "net")?,
                    );
                    out.extend((0..s.len()).map(|i| (s[i].clone(), m[i], n[i])));
                }
                Ok(out)
            }),
            changes: changes.and_then(|b| {
                let mut out = Vec::new();
                for batch in &b {
                    let (seq, at, segment, subject, change, reason) = (
                        ints(batch, "seq")?,
                        ints(batch, "at_s")?,
                        texts(batch, "segment")?,
                        texts(batch, "subject_id")?,
                        texts(batch, "change")?,
                        texts(batch, "reason")?,
                    );
                    out.extend((0..seq.len()).map(|i| ChangeLine {
                        seq: seq[i],
                        at_secs: at[i],
                        segment: segment[i].clone(),
                        subject_id: subject[i].clone(),
                        change: change[i].clone(),
                        reason: reason[i].clone(),
                    }));
                }
                Ok(out)
            }),
        })
    }

    /// Lag and dead letters from the processor's and the collector's `/metrics`.
    pub(super) async fn counters(&self) -> Counters {
        let collector_url = format!("{}/metrics", self.collector_url);
        let processor = async {
            match &self.processor_metrics_url {
                Some(url) => Some(self.fetch(url).await),
                None => None,
            }
        };
        let (processor, collector) = tokio::join!(processor, self.fetch(&collector_url));
        let mut counters = Counters::default();
        match collector {
            Ok(text) => {
                for (labels, value) in samples(&text, spur_collector::metrics::EVENTS_DEAD_LETTERED)
                {
                    let reason = label(&labels, "reason");
                    counters.dead_letters.entry(reason).or_default().0 += value;
                }
            }
            Err(e) => counters.unreadable.push(format!("collector: {e}")),
        }
        counters.lag = processor.map(|fetched| match fetched {
            Ok(text) => {
                for (labels, value) in samples(&text, spur_processor::metrics::DEAD_LETTERED) {
                    let reason = label(&labels, "reason");
                    counters.dead_letters.entry(reason).or_default().1 += value;
                }
                let lag = samples(&text, spur_processor::metrics::LAG);
                Ok(lag.iter().map(|(_, v)| v).sum())
            }
            Err(e) => {
                counters.unreadable.push(format!("processor: {e}"));
                Err(e)
            }
        });
        counters
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        response
            .text()
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))
    }
}

/// Runs one read-only statement through the analysts' catalog.
async fn query(catalog: &Catalog, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let mut planned = catalog.plan_sql(sql).await.map_err(|e| error_chain(&e))?;
    let Some(planned) = planned.pop() else {
        return Ok(Vec::new());
    };
    let stream = catalog
        .execute(planned)
        .await
        .map_err(|e| error_chain(&e))?;
    stream
        .try_collect()
        .await
        .map_err(|e| error_chain(&catalog.error(e)))
}

fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<i64>, String> {
    int64s(batch, name).map_err(|e| error_chain(&e))
}

fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<String>, String> {
    Ok(strings(batch, name)
        .map_err(|e| error_chain(&e))?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

fn named_counts(
    batches: &[RecordBatch],
    name: &str,
    count: &str,
) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    for batch in batches {
        out.extend(texts(batch, name)?.into_iter().zip(ints(batch, count)?));
    }
    Ok(out)
}

/// The samples of metric `name` in a Prometheus text exposition: each line's labels
/// and value. Comments, other metrics and unparsable lines are skipped.
pub(super) fn samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => match parse_labels(rest) {
                Some(parsed) => parsed,
                None => continue,
            },
            None if rest.starts_with(' ') => (Vec::new(), rest),
            None => continue,
        };
        // The value, then an optional timestamp.
        if let Some(Ok(value)) = value.split_whitespace().next().map(str::parse::<f64>) {
            out.push((labels, value));
        }
    }
    out
}

/// `k="v",…}` and what follows the closing brace. Values may hold `\"`, `\\`, `\n`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = &after[end + 1..];
    }
}

fn label(labels: &[(String, String)], name: &str) -> String {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn hh_mm(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.0} %", 100.0 * part as f64 / whole as f64)
    }
}

fn card(title: &str, class: &str, inner: &str) -> String {
    format!(r#"<section class="card {class}"><h2>{title}</h2>{inner}</section>"#)
}

fn failed(why: &str) -> String {
    format!(
        r#"<p class="muted small">Could not be read: <code>{}</code></p>"#,
        esc(why)
    )
}

/// A table of names and counts with a bar each.
fn ranking(rows: &[(String, i64)], empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="muted">{empty}</p>"#);
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let mut out = String::from("<table>");
    for (name, n) in rows {
        out.push_str(&format!(
            r#"<tr><td>{}</td><td class="n">{n}</td><td style="width:40%"><div class="bar" style="width:{:.0}%"></div></td></tr>"#,
            esc(name),
            100.0 * *n as f64 / max as f64
        ));
    }
    out.push_str("</table>");
    out
}

/// The segment sizes over time from the net change per minute: each segment's
/// running total, from its first change (or the start of the last 24 h) to now.
pub(super) fn size_series(sizes: &[(String, i64, i64)], now_secs: i64) -> (Vec<Series>, f64) {
    let mut series: Vec<Series> = Vec::new();
    let x0 = sizes
        .iter()
        .map(|s| s.1 * 60)
        .min()
        .unwrap_or(now_secs)
        .max(now_secs - 86_400) as f64;
    for (segment, minute, net) in sizes {
        if series.last().is_none_or(|s| &s.name != segment) {
            series.push(Series {
                name: segment.clone(),
                points: Vec::new(),
            });
        }
        if let Some(current) = series.last_mut() {
            let size = current.points.last().map_or(0.0, |p| p.1) + *net as f64;
            let x = ((minute * 60) as f64).max(x0);
            // Changes before the window fold into its first point.
            match current.points.last_mut() {
                Some(last) if last.0 == x => last.1 = size,
                _ => current.points.push((x, size)),
            }
        }
    }
    (series, x0)
}

pub(super) fn render(
    lake: &Result<LakeData, String>,
    counters: &Counters,
    lake_root: &str,
    collector_url: &str,
    now_ms: i64,
) -> String {
    let now = now_ms.div_euclid(1000);
    let minute = now.div_euclid(60);
    let mut body = String::from("<h1>Dashboard</h1>");
    let lag = match &counters.lag {
        Some(Ok(lag)) => format!("{lag:.0}"),
        Some(Err(_)) => "?".to_owned(),
        None => "–".to_owned(),
    };
    // A fold from 0.0: `Sum` of no f64 is -0.0, which prints as "-0".
    let dead: f64 = counters
        .dead_letters
        .values()
        .fold(0.0, |all, (c, p)| all + c + p);
    let data = match lake {
        Ok(data) => data,
        Err(why) => {
            body.push_str(&format!(
                r#"<div class="card note"><h2>No data yet</h2><p>The lake at <code>{}</code> is not there yet: the processor creates it with its first commit. Open the <a href="{}/demo/">demo shop</a> and click around; this page reloads every 5 s.</p><p class="small muted">{}</p></div>"#,
                esc(lake_root),
                esc(collector_url),
                esc(why)
            ));
            body.push_str(&counters_cards(counters, &lag, dead));
            return super::page("Dashboard", Some(5), &body);
        }
    };
    // Events per minute over the last hour: 60 bars, the current minute last.
    let mut per_minute = vec![0.0; 60];
    let mut hour_total = 0;
    if let Ok(rows) = &data.per_minute {
        for (m, events, _) in rows {
            if let Some(slot) = usize::try_from(m - (minute - 59)).ok().filter(|i| *i < 60) {
                per_minute[slot] = *events as f64;
                hour_total += events;
            }
        }
    }
    let members: i64 = data
        .sizes
        .as_ref()
        .map(|s| s.iter().map(|r| r.2).sum())
        .unwrap_or(0);
    body.push_str(&format!(
        r#"<div class="grid kpis">
<div class="card"><div class="muted small">Events, last hour</div><div class="kpi" id="events-hour">{hour_total}</div></div>
<div class="card"><div class="muted small">Segment members now</div><div class="kpi" id="members">{members}</div></div>
<div class="card"><div class="muted small">Processor lag (records)</div><div class="kpi" id="lag">{lag}</div></div>
<div class="card"><div class="muted small">Dead letters (since start)</div><div class="kpi" id="dead-letters">{dead:.0}</div></div>
</div>"#
    ));
    let labels: Vec<(usize, String)> = (0..60)
        .step_by(10)
        .map(|i| (i, hh_mm((minute - 59 + i as i64) * 60)))
        .chain([(59, "now".to_owned())])
        .collect();
    let chart = match &data.per_minute {
        Ok(_) => svg::bars(&per_minute, &labels, 1000.0, 180.0, "events per minute"),
        Err(why) => failed(why),
    };
    body.push_str(&card("Events per minute, last hour (UTC)", "wide", &chart));
    body.push_str(r#"<div class="grid">"#);
    let list = |rows: &Result<Vec<(String, i64)>, String>, empty: &str| match rows {
        Ok(rows) => ranking(rows, empty),
        Err(why) => failed(why),
    };
    body.push_str(&card(
        "Top pages, last 24 h",
        "",
        &list(&data.pages, "No pageviews in the last 24 hours."),
    ));
    body.push_str(&card(
        "Top topics, last 24 h",
        "",
        &list(
            &data.topics,
            "No page with topics viewed in the last 24 hours.",
        ),
    ));
    let consent = match &data.consent {
        Ok(c) => format!(
            r#"<table><tr><th>Purpose</th><th class="n">Rate</th><th class="n">Pageviews</th></tr>
<tr><td>analytics</td><td class="n" id="consent-analytics">{}</td><td class="n">{}</td></tr>
<tr><td>marketing</td><td class="n" id="consent-marketing">{}</td><td class="n">{}</td></tr></table>
<p class="small muted">Share of the {} human pageviews of the last 24 h whose visitor had given each purpose's consent in the banner.</p>"#,
            percent(c.analytics, c.pageviews),
            c.analytics,
            percent(c.marketing, c.pageviews),
            c.marketing,
            c.pageviews
        ),
        Err(why) => failed(why),
    };
    let ledger = match &data.ledger {
        Ok(rows) if rows.is_empty() => {
            r#"<p class="small muted">No marketing consent in the ledger yet.</p>"#.to_owned()
        }
        Ok(rows) => format!(
            r#"<p class="small">Consent ledger, marketing: {}</p>"#,
            rows.iter()
                .map(|(kind, n)| format!("{} {}", n, esc(kind)))
                .collect::<Vec<_>>()
                .join(" · ")
        ),
        Err(why) => failed(why),
    };
    body.push_str(&card("Consent per purpose", "", &(consent + &ledger)));
    body.push_str("</div>");
    let sizes = match &data.sizes {
        Ok(rows) if rows.is_empty() => {
            r#"<p class="muted">No segment change yet: segments fill when people with marketing consent match them.</p>"#.to_owned()
        }
        Ok(rows) => {
            let (series, x0) = size_series(rows, now);
            let span = now as f64 - x0;
            let labels: Vec<(f64, String)> = (0..=4)
                .map(|i| {
                    let x = x0 + span * f64::from(i) / 4.0;
                    (x, hh_mm(x as i64))
                })
                .collect();
            svg::steps(&series, (x0, now as f64), &labels, 1000.0, 200.0, "segment sizes")
        }
        Err(why) => failed(why),
    };
    body.push_str(&card("Segment sizes over time (UTC)", "wide", &sizes));
    let changes = match &data.changes {
        Ok(rows) if rows.is_empty() => r#"<p class="muted">None yet.</p>"#.to_owned(),
        Ok(rows) => {
            let mut t = String::from(
                r#"<table><tr><th class="n">seq</th><th>at (UTC)</th><th>change</th><th>segment</th><th>subject</th><th>reason</th></tr>"#,
            );
            for c in rows {
                let at = chrono::DateTime::from_timestamp(c.at_secs, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                t.push_str(&format!(
                    r#"<tr><td class="n">{}</td><td>{at}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>"#,
                    c.seq,
                    esc(&c.change),
                    esc(&c.segment),
                    esc(c.subject_id.get(..12).unwrap_or(&c.subject_id)),
                    esc(&c.reason)
                ));
            }
            t.push_str("</table>");
            t
        }
        Err(why) => failed(why),
    };
    body.push_str(&card("Latest segment changes", "wide", &changes));
    body.push_str(&counters_cards(counters, &lag, dead));
    body.push_str(&format!(
        r#"<p class="small muted">Lake <code>{}</code>, read through the analysts' SQL (the same tables and views as <code>spur sql</code>); counters from the services' <code>/metrics</code>. Drawn {} UTC; reloads every 5 s.</p>"#,
        esc(lake_root),
        chrono::DateTime::from_timestamp(now, 0)
            .map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_default()
    ));
    super::page("Dashboard", Some(5), &body)
}

fn counters_cards(counters: &Counters, lag: &str, dead: f64) -> String {
    let lag = match &counters.lag {
        Some(Ok(_)) => format!(
            r#"<p><span class="kpi">{lag}</span> records in Kafka not yet in the lake (<code>spur_processor_lag_records</code>, all partitions).</p>"#
        ),
        Some(Err(why)) => failed(why),
        None => r#"<p class="muted">Unknown: the console was given no processor metrics URL.</p>"#
            .to_owned(),
    };
    let dead_letters = if counters.dead_letters.is_empty() {
        r#"<p class="muted">None since the services started.</p>"#.to_owned()
    } else {
        let mut t = String::from(
            r#"<table><tr><th>reason</th><th class="n">collector</th><th class="n">processor</th></tr>"#,
        );
        for (reason, (c, p)) in &counters.dead_letters {
            t.push_str(&format!(
                r#"<tr><td>{}</td><td class="n">{c:.0}</td><td class="n">{p:.0}</td></tr>"#,
                esc(reason)
            ));
        }
        t.push_str("</table>");
        t
    };
    let unreadable: String = counters.unreadable.iter().map(|u| failed(u)).collect();
    format!(
        r#"<div class="grid">{}{}</div>"#,
        card("Processor lag", "", &lag),
        card(
            "Dead letters by reason",
            "",
            &format!(
                r#"{dead_letters}<p class="small muted">{dead:.0} in all, on topic <code>{topic}</code> (not in the lake); counted since each process started.</p>{unreadable}"#,
                topic = spur_schemas::kafka::TOPIC_DEAD_LETTER
            )
        )
    )
}
