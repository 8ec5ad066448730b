//! The Arrow schemas of the lake's tables and the conversion of rows into record
//! batches: `events` follows [`EventRow`], `sessions` follows [`SessionRow`] and
//! `scores` follows [`ScoreRow`] and `segment_changes` follows [`SegmentChangeRow`],
//! field by field and with the same names. `docs/lake.md` documents every column.
//!
//! Conventions: times arrive as milliseconds since the epoch and are stored as
//! `Timestamp(Microsecond, "UTC")`, the only timestamp type the Delta protocol knows
//! without the `timestampNtz` feature; `dt` (`YYYY-MM-DD`) is a plain string because it
//! is the partition column and Delta writes it into the directory name, not the file.
//! Nullability mirrors the structs: `Option` fields are nullable, everything else is
//! not, so a writer bug that loses a required value fails the write instead of
//! landing as `NULL`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, RecordBatch, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::error::ArrowError;

use crate::error::Result;
use crate::model::{
    AudienceStateRow, ContactRow, ErasureRow, EventRow, LedgerRow, ScoreRow, SegmentChangeRow,
    SessionRow,
};

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "dt";

/// Time zone of every timestamp column. Delta's `timestamp` type is UTC-adjusted.
const UTC: &str = "UTC";

/// The element field of `topics`. Named `element`, as the Parquet list convention and
/// delta-kernel's Arrow conversion name it, so the batch and the table schema agree
/// without a cast; elements are never null (a `Vec<String>` has no holes).
fn topics_element() -> FieldRef {
    Arc::new(Field::new("element", DataType::Utf8, false))
}

/// The fields of one `sessions.pageview_dwell` element ([`PageviewDwell`](crate::model::PageviewDwell)).
fn dwell_fields() -> Fields {
    Fields::from(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("dwell_ms", DataType::Int64, true),
        Field::new("dwell_source", DataType::Utf8, true),
        Field::new("scroll_pct_max", DataType::Int32, true),
    ])
}

/// The element field of `sessions.pageview_dwell` (named like [`topics_element`]).
fn dwell_element() -> FieldRef {
    Arc::new(Field::new(
        "element",
        DataType::Struct(dwell_fields()),
        false,
    ))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8("event_id", false),
        utf8("site_id", false),
        utf8("event_type", false),
        Field::new("event_time", timestamp(), false),
        Field::new("received_at", timestamp(), false),
        utf8(PARTITION_COLUMN, false),
        utf8("visitor_id", false),
        utf8("visitor_kind", false),
        Field::new("key_version", DataType::Int32, false),
        utf8("session_id", false),
        Field::new("consent_analytics", DataType::Boolean, false),
        Field::new("consent_marketing", DataType::Boolean, false),
        Field::new("gpc", DataType::Boolean, false),
        Field::new("dnt", DataType::Boolean, false),
        utf8("country", true),
        utf8("region", true),
        utf8("browser", false),
        utf8("browser_version", false),
        utf8("os", false),
        utf8("device", false),
        Field::new("is_bot", DataType::Boolean, false),
        utf8("bot_reason", true),
        utf8("url", true),
        utf8("host", true),
        utf8("path", true),
        utf8("referrer", true),
        utf8("title", true),
        Field::new("topics", DataType::List(topics_element()), false),
        Field::new("engaged_ms", DataType::Int64, true),
        Field::new("scroll_pct", DataType::Int32, true),
        utf8("email_hash", true),
        utf8("form", true),
        utf8("consent_purposes", true),
        utf8("consent_evidence", true),
        utf8("name", true),
        utf8("props", true),
        utf8("time_flags", true),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        // Added after the first release: nullable, and last, so that older tables
        // gain it by schema evolution (`table::open`).
        Field::new("redacted", DataType::Boolean, true),
    ]))
});

static SESSIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8("session_id", false),
        utf8("site_id", false),
        utf8("visitor_id", false),
        utf8(PARTITION_COLUMN, false),
        Field::new("start_time", timestamp(), false),
        Field::new("end_time", timestamp(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("pageviews", DataType::Int64, false),
        Field::new("engaged_ms", DataType::Int64, false),
        utf8("entry_path", true),
        utf8("exit_path", true),
        Field::new("is_bot", DataType::Boolean, false),
        utf8("country", true),
        utf8("device", false),
        utf8("closed_by", false),
        Field::new("kafka_partition", DataType::Int32, false),
        // Nullable only so that tables from before it gain it (`Lake::open`); always
        // written.
        Field::new("pageview_dwell", DataType::List(dwell_element()), true),
    ]))
});

static SCORES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("subject_id", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("raw", DataType::Float64, false),
        Field::new("views", DataType::Int64, false),
        Field::new("last_view", timestamp(), false),
        Field::new("as_of", timestamp(), false),
        Field::new(PARTITION_COLUMN, DataType::Utf8, false),
    ]))
});

static SEGMENT_CHANGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("change_id"),
        Field::new("seq", DataType::Int64, false),
        utf8("segment"),
        utf8("subject_id"),
        utf8("change"),
        utf8("reason"),
        Field::new("at", timestamp(), false),
        utf8(PARTITION_COLUMN),
    ]))
});

static LEDGER: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("at", timestamp(), false),
        Field::new("recorded_at", timestamp(), false),
        utf8("kind", false),
        utf8("purpose", true),
        utf8("subject_id", true),
        utf8("visitor_id", true),
        utf8("site_id", true),
        utf8("event_id", true),
        utf8("evidence", true),
        utf8("reason", true),
        utf8("digest", false),
        utf8("chain", false),
        Field::new("erased", DataType::Boolean, false),
        utf8(PARTITION_COLUMN, false),
    ]))
});

static ERASURES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("erasure_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("at", timestamp(), false),
        Field::new("digests", DataType::List(topics_element()), false),
        Field::new("receipt", DataType::Utf8, true),
        Field::new(PARTITION_COLUMN, DataType::Utf8, false),
    ]))
});

static CONTACTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("subject_id"),
        utf8("event_id"),
        utf8("site_id"),
        Field::new("address", DataType::Binary, false),
        Field::new("recorded_at", timestamp(), false),
        utf8(PARTITION_COLUMN),
    ]))
});

/// Schema of table `contacts`: one column per field of [`ContactRow`].
pub fn contacts_schema() -> SchemaRef {
    Arc::clone(&CONTACTS)
}

/// Converts sealed contacts into one record batch with [`contacts_schema`].
pub fn contacts_batch(rows: &[ContactRow]) -> Result<RecordBatch> {
    let mut address = BinaryBuilder::with_capacity(rows.len(), rows.len() * 64);
    for row in rows {
        address.append_value(&row.address);
    }
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.subject_id),
        utf8(rows, |r| &r.event_id),
        utf8(rows, |r| &r.site_id),
        Arc::new(address.finish()),
        micros(rows, "recorded_at", |r| r.recorded_at)?,
        utf8(rows, |r| &r.dt),
    ];
    Ok(RecordBatch::try_new(contacts_schema(), columns)?)
}

/// Schema of table `ledger`: one column per field of [`LedgerRow`].
pub fn ledger_schema() -> SchemaRef {
    Arc::clone(&LEDGER)
}

/// Schema of table `erasures`: one column per field of [`ErasureRow`].
pub fn erasures_schema() -> SchemaRef {
    Arc::clone(&ERASURES)
}

/// Schema of table `events`: one column per field of [`EventRow`].
pub fn events_schema() -> SchemaRef {
    Arc::clone(&EVENTS)
}

/// Schema of table `sessions`: one column per field of [`SessionRow`].
pub fn sessions_schema() -> SchemaRef {
    Arc::clone(&SESSIONS)
}

static AUDIENCE_STATE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("visitor_id", DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
    ]))
});

/// Schema of table `audience_state`: one column per field of [`AudienceStateRow`].
pub fn audience_state_schema() -> SchemaRef {
    Arc::clone(&AUDIENCE_STATE)
}

/// Converts audience state rows into one record batch with [`audience_state_schema`].
pub fn audience_state_batch(rows: &[AudienceStateRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.visitor_id),
        utf8(rows, |r| &r.dt),
        utf8(rows, |r| &r.state),
    ];
    Ok(RecordBatch::try_new(audience_state_schema(), columns)?)
}

/// Schema of table `scores`: one column per field of [`ScoreRow`].
pub fn scores_schema() -> SchemaRef {
    Arc::clone(&SCORES)
}

/// Schema of table `segment_changes`: one column per field of [`SegmentChangeRow`].
pub fn segment_changes_schema() -> SchemaRef {
    Arc::clone(&SEGMENT_CHANGES)
}

/// Converts events into one record batch with [`events_schema`].
///
/// Fails only if a time is beyond what microseconds since the epoch can hold (about
/// ±292,000 years), which no clock-checked event reaches.
pub fn events_batch(rows: &[EventRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.event_id),
        utf8(rows, |r| &r.site_id),
        utf8(rows, |r| &r.event_type),
        micros(rows, "event_time", |r| r.event_time)?,
        micros(rows, "received_at", |r| r.received_at)?,
        utf8(rows, |r| &r.dt),
        utf8(rows, |r| &r.visitor_id),
        utf8(rows, |r| &r.visitor_kind),
        int32(rows, |r| Some(r.key_version)),
        utf8(rows, |r| &r.session_id),
        boolean(rows, |r| r.consent_analytics),
        boolean(rows, |r| r.consent_marketing),
        boolean(rows, |r| r.gpc),
        boolean(rows, |r| r.dnt),
        opt_utf8(rows, |r| r.country.as_deref()),
        opt_utf8(rows, |r| r.region.as_deref()),
        utf8(rows, |r| &r.browser),
        utf8(rows, |r| &r.browser_version),
        utf8(rows, |r| &r.os),
        utf8(rows, |r| &r.device),
        boolean(rows, |r| r.is_bot),
        opt_utf8(rows, |r| r.bot_reason.as_deref()),
        opt_utf8(rows, |r| r.url.as_deref()),
        opt_utf8(rows, |r| r.host.as_deref()),
        opt_utf8(rows, |r| r.path.as_deref()),
        opt_utf8(rows, |r| r.referrer.as_deref()),
        opt_utf8(rows, |r| r.title.as_deref()),
        topics(rows),
        int64(rows, |r| r.engaged_ms),
        int32(rows, |r| r.scroll_pct),
        opt_utf8(rows, |r| r.email_hash.as_deref()),
        opt_utf8(rows, |r| r.form.as_deref()),
        opt_utf8(rows, |r| r.consent_purposes.as_deref()),
        opt_utf8(rows, |r| r.consent_evidence.as_deref()),
        opt_utf8(rows, |r| r.name.as_deref()),
        opt_utf8(rows, |r| r.props.as_deref()),
        opt_utf8(rows, |r| r.time_flags.as_deref()),
        int32(rows, |r| Some(r.kafka_partition)),
        int64(rows, |r| Some(r.kafka_offset)),
        opt_boolean(rows, |r| r.redacted),
    ];
    Ok(RecordBatch::try_new(events_schema(), columns)?)
}

/// Converts sessions into one record batch with [`sessions_schema`].
pub fn sessions_batch(rows: &[SessionRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.session_id),
        utf8(rows, |r| &r.site_id),
        utf8(rows, |r| &r.visitor_id),
        utf8(rows, |r| &r.dt),
        micros(rows, "start_time", |r| r.start_time)?,
        micros(rows, "end_time", |r| r.end_time)?,
        int64(rows, |r| Some(r.duration_ms)),
        int64(rows, |r| Some(r.events)),
        int64(rows, |r| Some(r.pageviews)),
        int64(rows, |r| Some(r.engaged_ms)),
        opt_utf8(rows, |r| r.entry_path.as_deref()),
        opt_utf8(rows, |r| r.exit_path.as_deref()),
        boolean(rows, |r| r.is_bot),
        opt_utf8(rows, |r| r.country.as_deref()),
        utf8(rows, |r| &r.device),
        utf8(rows, |r| &r.closed_by),
        int32(rows, |r| Some(r.kafka_partition)),
        pageview_dwell(rows),
    ];
    Ok(RecordBatch::try_new(sessions_schema(), columns)?)
}

/// Converts scores into one record batch with [`scores_schema`].
pub fn scores_batch(rows: &[ScoreRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.subject_id),
        utf8(rows, |r| &r.topic),
        float64(rows, |r| r.score),
        float64(rows, |r| r.raw),
        int64(rows, |r| Some(r.views)),
        micros(rows, "last_view", |r| r.last_view)?,
        micros(rows, "as_of", |r| r.as_of)?,
        utf8(rows, |r| &r.dt),
    ];
    Ok(RecordBatch::try_new(scores_schema(), columns)?)
}

/// Converts segment changes into one record batch with [`segment_changes_schema`].
pub fn segment_changes_batch(rows: &[SegmentChangeRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.change_id),
        int64(rows, |r| Some(r.seq)),
        utf8(rows, |r| &r.segment),
        utf8(rows, |r| &r.subject_id),
        utf8(rows, |r| &r.change),
        utf8(rows, |r| &r.reason),
        micros(rows, "at", |r| r.at)?,
        utf8(rows, |r| &r.dt),
    ];
    Ok(RecordBatch::try_new(segment_changes_schema(), columns)?)
}

/// Converts ledger entries into one record batch with [`ledger_schema`].
pub fn ledger_batch(rows: &[LedgerRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        int64(rows, |r| Some(r.seq)),
        micros(rows, "at", |r| r.at)?,
        micros(rows, "recorded_at", |r| r.recorded_at)?,
        utf8(rows, |r| &r.kind),
        opt_utf8(rows, |r| r.purpose.as_deref()),
        opt_utf8(rows, |r| r.subject_id.as_deref()),
        opt_utf8(rows, |r| r.visitor_id.as_deref()),
        opt_utf8(rows, |r| r.site_id.as_deref()),
        opt_utf8(rows, |r| r.event_id.as_deref()),
        opt_utf8(rows, |r| r.evidence.as_deref()),
        opt_utf8(rows, |r| r.reason.as_deref()),
        utf8(rows, |r| &r.digest),
        utf8(rows, |r| &r.chain),
        boolean(rows, |r| r.erased),
        utf8(rows, |r| &r.dt),
    ];
    Ok(RecordBatch::try_new(ledger_schema(), columns)?)
}

/// Converts erasure steps into one record batch with [`erasures_schema`].
pub fn erasures_batch(rows: &[ErasureRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        utf8(rows, |r| &r.erasure_id),
        utf8(rows, |r| &r.status),
        micros(rows, "at", |r| r.at)?,
        string_list(rows, |r| &r.digests),
        opt_utf8(rows, |r| r.receipt.as_deref()),
        utf8(rows, |r| &r.dt),
    ];
    Ok(RecordBatch::try_new(erasures_schema(), columns)?)
}

fn utf8<T>(rows: &[T], get: impl Fn(&T) -> &str) -> ArrayRef {
    let bytes = rows.iter().map(|r| get(r).len()).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_value(get(row));
    }
    Arc::new(builder.finish())
}

fn opt_utf8<T>(rows: &[T], get: impl Fn(&T) -> Option<&str>) -> ArrayRef {
    let bytes = rows.iter().filter_map(&get).map(str::len).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn boolean<T>(rows: &[T], get: impl Fn(&T) -> bool) -> ArrayRef {
    let mut builder = BooleanBuilder::with_capacity(rows.len());
    for row in rows {
        builder.append_value(get(row));
    }
    Arc::new(builder.finish())
}

/// Int32 column; `None` is a null (only nullable columns ever pass one).
fn opt_boolean<T>(rows: &[T], get: impl Fn(&T) -> Option<bool>) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(rows.len());
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

fn int32<T>(rows: &[T], get: impl Fn(&T) -> Option<i32>) -> ArrayRef {
    let mut builder = Int32Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

/// Int64 column; `None` is a null (only nullable columns ever pass one).
fn int64<T>(rows: &[T], get: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    let mut builder = Int64Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_option(get(row));
    }
    Arc::new(builder.finish())
}

fn float64<T>(rows: &[T], get: impl Fn(&T) -> f64) -> ArrayRef {
    let mut builder = Float64Builder::with_capacity(rows.len());
    for row in rows {
        builder.append_value(get(row));
    }
    Arc::new(builder.finish())
}

/// A UTC microsecond timestamp column from a milliseconds field.
fn micros<T>(rows: &[T], column: &str, get_ms: impl Fn(&T) -> i64) -> Result<ArrayRef> {
    let mut builder = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone(UTC);
    for row in rows {
        let ms = get_ms(row);
        let us = ms.checked_mul(1_000).ok_or_else(|| {
            ArrowError::InvalidArgumentError(format!(
                "{column} of {ms} ms is out of the microsecond range"
            ))
        })?;
        builder.append_value(us);
    }
    Ok(Arc::new(builder.finish()))
}

/// `sessions.pageview_dwell`: a non-null list of dwell structs per session.
fn pageview_dwell(rows: &[SessionRow]) -> ArrayRef {
    let fields = dwell_fields();
    let builders: Vec<Box<dyn ArrayBuilder>> = vec![
        Box::new(StringBuilder::new()),
        Box::new(Int64Builder::new()),
        Box::new(StringBuilder::new()),
        Box::new(Int32Builder::new()),
    ];
    let mut list = ListBuilder::with_capacity(StructBuilder::new(fields, builders), rows.len())
        .with_field(dwell_element());
    for row in rows {
        let items = list.values();
        for d in &row.pageview_dwell {
            items
                .field_builder::<StringBuilder>(0)
                .expect("event_id builder")
                .append_value(&d.event_id);
            items
                .field_builder::<Int64Builder>(1)
                .expect("dwell_ms builder")
                .append_option(d.dwell_ms);
            items
                .field_builder::<StringBuilder>(2)
                .expect("dwell_source builder")
                .append_option(d.dwell_source.as_deref());
            items
                .field_builder::<Int32Builder>(3)
                .expect("scroll_pct_max builder")
                .append_option(d.scroll_pct_max);
            items.append(true);
        }
        list.append(true);
    }
    Arc::new(list.finish())
}

fn topics(rows: &[EventRow]) -> ArrayRef {
    string_list(rows, |r| &r.topics)
}

/// A non-null list of non-null strings per row (`topics`, `digests`).
fn string_list<T>(rows: &[T], get: impl Fn(&T) -> &[String]) -> ArrayRef {
    let mut builder =
        ListBuilder::with_capacity(StringBuilder::new(), rows.len()).with_field(topics_element());
    for row in rows {
        for item in get(row) {
            builder.values().append_value(item);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Rows for tests: plausible values, pseudonyms that look like the real hex HMACs.

    use crate::model::{EventRow, SessionRow};

    /// Milliseconds of `2025-11-29T12:00:00Z`.
    pub(crate) const NOON: i64 = 1_764_417_600_000;
    const DAY_MS: i64 = 86_400_000;

    /// An event of day `NOON + day` days; `n` makes ids and offsets distinct.
    pub(crate) fn event(day: i64, n: i64) -> EventRow {
        let event_time = NOON + day * DAY_MS + n;
        let dt = chrono::DateTime::from_timestamp_millis(event_time)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let identify = n % 3 == 2;
        EventRow {
            event_id: format!("ev-{day}-{n}"),
            site_id: "shop".into(),
            event_type: if identify { "identify" } else { "pageview" }.into(),
            event_time,
            received_at: event_time + 40,
            dt,
            visitor_id: format!("{:064x}", 0xabc0 + n),
            visitor_kind: "persistent".into(),
            key_version: 1,
            session_id: format!("{:032x}", 0x5e55 + n / 4),
            consent_analytics: true,
            consent_marketing: n % 2 == 0,
            gpc: false,
            dnt: false,
            country: Some("DE".into()),
            region: if n % 2 == 0 { Some("BE".into()) } else { None },
            browser: "Firefox".into(),
            browser_version: "133".into(),
            os: "Linux".into(),
            device: "pc".into(),
            is_bot: false,
            bot_reason: None,
            url: Some(format!("https://shop.example/p/{n}?utm_source=news")),
            host: Some("shop.example".into()),
            path: Some(format!("/p/{n}")),
            referrer: None,
            title: Some(format!("Product {n}")),
            topics: if n % 2 == 0 {
                vec!["shoes".into(), "sale".into()]
            } else {
                Vec::new()
            },
            engaged_ms: None,
            scroll_pct: None,
            email_hash: identify.then(|| format!("{:064x}", 0xe0 + n)),
            form: identify.then(|| "newsletter".into()),
            consent_purposes: None,
            consent_evidence: None,
            name: None,
            props: None,
            time_flags: None,
            kafka_partition: 0,
            kafka_offset: n,
            redacted: Some(n % 2 == 0),
        }
    }

    pub(crate) fn session(day: i64, n: i64) -> SessionRow {
        let start_time = NOON + day * DAY_MS + n * 1_000;
        let dt = chrono::DateTime::from_timestamp_millis(start_time)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        SessionRow {
            session_id: format!("{:032x}", 0x5e55 + n),
            site_id: "shop".into(),
            visitor_id: format!("{:064x}", 0xabc0 + n),
            dt,
            start_time,
            end_time: start_time + 90_000,
            duration_ms: 90_000,
            events: 4,
            pageviews: 3,
            engaged_ms: 61_000,
            entry_path: Some("/".into()),
            exit_path: if n % 2 == 0 {
                Some("/cart".into())
            } else {
                None
            },
            is_bot: false,
            country: Some("DE".into()),
            device: "mobile".into(),
            closed_by: "inactivity".into(),
            kafka_partition: 0,
            pageview_dwell: vec![crate::model::PageviewDwell {
                event_id: format!("ev-{n}"),
                dwell_ms: Some(61_000),
                dwell_source: Some(crate::dwell::ENGAGEMENT.into()),
                scroll_pct_max: None,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Array, AsArray, BooleanArray, ListArray, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::Int64Type;

    use super::fixtures::{NOON, event, session};
    use super::*;

    #[test]
    fn events_schema_has_one_column_per_field_in_order() {
        let names: Vec<_> = events_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // The field list of `EventRow`, in declaration order: a new field must be
        // added here, to the schema, to `events_batch` and to docs/lake.md.
        let expected = [
            "event_id",
            "site_id",
            "event_type",
            "event_time",
            "received_at",
            "dt",
            "visitor_id",
            "visitor_kind",
            "key_version",
            "session_id",
            "consent_analytics",
            "consent_marketing",
            "gpc",
            "dnt",
            "country",
            "region",
            "browser",
            "browser_version",
            "os",
            "device",
            "is_bot",
            "bot_reason",
            "url",
            "host",
            "path",
            "referrer",
            "title",
            "topics",
            "engaged_ms",
            "scroll_pct",
            "email_hash",
            "form",
            "consent_purposes",
            "consent_evidence",
            "name",
            "props",
            "time_flags",
            "kafka_partition",
            "kafka_offset",
            "redacted",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn events_batch_converts_times_lists_and_nulls() {
        let rows = [event(0, 0), event(0, 1)];
        let batch = events_batch(&rows).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), events_schema());

        let time = batch
            .column_by_name("event_time")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .expect("event_time");
        assert_eq!(time.value(0), NOON * 1_000);
        assert_eq!(time.timezone(), Some("UTC"));

        let topics = batch
            .column_by_name("topics")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .expect("topics");
        let first = topics.value(0);
        let first = first.as_any().downcast_ref::<StringArray>().expect("utf8");
        assert_eq!(
            first.iter().flatten().collect::<Vec<_>>(),
            ["shoes", "sale"]
        );
        assert_eq!(topics.value(1).len(), 0);
        assert!(!topics.is_null(1), "an empty list is not a null list");

        let region = batch.column_by_name("region").expect("region");
        assert!(region.is_valid(0) && region.is_null(1));
        let engaged = batch.column_by_name("engaged_ms").expect("engaged_ms");
        assert_eq!(engaged.null_count(), 2);
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("kafka_offset")
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), [0, 1]);
    }

    #[test]
    fn sessions_batch_matches_schema() {
        let rows = [session(0, 0), session(1, 1)];
        let batch = sessions_batch(&rows).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), sessions_schema());
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names.len(), 18);
        let dwell = batch
            .column_by_name("pageview_dwell")
            .expect("pageview_dwell")
            .as_list::<i32>();
        assert_eq!(dwell.value_length(1), 1);
        let item = dwell.value(1);
        let item = item.as_struct();
        assert_eq!(item.column(0).as_string::<i32>().value(0), "ev-1");
        assert_eq!(
            item.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            61_000
        );
        let bot = batch
            .column_by_name("is_bot")
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
            .expect("is_bot");
        assert!(!bot.value(0));
        let dt = batch.column_by_name("dt").expect("dt").as_string::<i32>();
        assert_eq!(dt.value(0), "2025-11-29");
        assert_eq!(dt.value(1), "2025-11-30");
    }

    #[test]
    fn scores_batch_matches_schema_and_converts_times() {
        let row = ScoreRow {
            subject_id: "ab".repeat(16),
            topic: "boots".into(),
            score: 0.25,
            raw: 5.0 / 3.0,
            views: 3,
            last_view: NOON - 1,
            as_of: NOON,
            dt: "2025-11-29".into(),
        };
        let batch = scores_batch(&[row]).expect("batch");
        assert_eq!(batch.schema(), scores_schema());
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "subject_id",
                "topic",
                "score",
                "raw",
                "views",
                "last_view",
                "as_of",
                "dt"
            ]
        );
        let score = batch
            .column_by_name("score")
            .expect("score")
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(score.value(0), 0.25);
        let last = batch
            .column_by_name("last_view")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .expect("last_view");
        assert_eq!(last.value(0), (NOON - 1) * 1_000);
        assert_eq!(last.timezone(), Some("UTC"));
    }

    #[test]
    fn empty_input_gives_an_empty_batch() {
        assert_eq!(events_batch(&[]).expect("events").num_rows(), 0);
        assert_eq!(sessions_batch(&[]).expect("sessions").num_rows(), 0);
        assert_eq!(scores_batch(&[]).expect("scores").num_rows(), 0);
    }

    #[test]
    fn time_outside_the_microsecond_range_is_an_error() {
        let mut row = event(0, 0);
        row.event_time = i64::MAX / 10;
        assert!(events_batch(&[row]).is_err());
    }
}
