//! [`Identity`] taken in step by step equals [`LINKS_SQL`] and [`consent_sql`] run
//! over the whole ledger.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use spur_lake::read::{collect, strings};

use super::*;

const KINDS: [&str; 7] = [
    "link",
    "unlink",
    "grant",
    "confirm",
    "withdraw",
    "unsubscribe",
    "link_refused",
];

fn pick(names: &[&str], i: usize) -> Option<String> {
    names.get(i).map(|n| (*n).to_owned())
}

/// Entries (and whether an erasure redacted them) over few visitors, subjects and
/// times, so links move, times tie and entries of a visitor change hands.
fn ledger() -> impl Strategy<Value = Vec<(Entry, bool)>> {
    prop::collection::vec(
        (
            0..7usize,
            0..3usize,
            0..5usize,
            0..5usize,
            0..6i64,
            prop::bool::weighted(0.1),
        ),
        0..40,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (kind, purpose, subject, visitor, at, erased))| {
                let entry = Entry {
                    seq: i as i64 + 1,
                    at,
                    kind: KINDS[kind].to_owned(),
                    purpose: pick(&["marketing", "analytics"], purpose),
                    subject_id: pick(&["s1", "s2", "s3", "v1"], subject),
                    visitor_id: pick(&["v1", "v2", "v3", "v4"], visitor),
                };
                (entry, erased)
            })
            .collect()
    })
}

fn context(entries: &[(Entry, bool)]) -> SessionContext {
    let strings = |f: &dyn Fn(&Entry) -> Option<String>| -> ArrayRef {
        Arc::new(entries.iter().map(|(e, _)| f(e)).collect::<StringArray>())
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("at", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("purpose", DataType::Utf8, true),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("visitor_id", DataType::Utf8, true),
        Field::new("erased", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|(e, _)| e.seq),
            )),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|(e, _)| e.at),
            )),
            strings(&|e| Some(e.kind.clone())),
            strings(&|e| e.purpose.clone()),
            strings(&|e| e.subject_id.clone()),
            strings(&|e| e.visitor_id.clone()),
            Arc::new(
                entries
                    .iter()
                    .map(|(_, x)| Some(*x))
                    .collect::<BooleanArray>(),
            ),
        ],
    )
    .expect("batch");
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
    ctx.register_table("ledger", Arc::new(table))
        .expect("register");
    ctx
}

async fn pairs(ctx: &SessionContext, sql: &str, a: &str, b: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for batch in &collect(ctx, sql).await.expect("query") {
        let (x, y) = (strings(batch, a).expect(a), strings(batch, b).expect(b));
        for (x, y) in x.into_iter().zip(y) {
            if let (Some(x), Some(y)) = (x, y) {
                out.insert(x, y);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn identity_taken_in_step_by_step_equals_the_sql_over_the_whole_ledger(
        entries in ledger(),
        cuts in prop::collection::vec(0..41usize, 0..5),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let ctx = context(&entries);
        // What an engine reads: the entries not redacted, in steps (a step may read
        // some again: they are skipped).
        let live: Vec<Entry> = entries.iter().filter(|(_, x)| !x).map(|(e, _)| e.clone()).collect();
        let mut identity = Identity::default();
        let mut from = 0usize;
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(live.len())).collect();
        cuts.sort_unstable();
        cuts.push(live.len());
        for cut in cuts {
            identity.apply(&live[from.saturating_sub(1).min(cut)..cut]);
            from = cut;
        }

        let links = runtime.block_on(pairs(&ctx, LINKS_SQL, "visitor_id", "subject_id"));
        let have: BTreeMap<String, String> = identity.subjects().person_of.clone().into_iter().collect();
        prop_assert_eq!(have, links);
        for double_opt_in in [false, true] {
            let sql = consent_sql(double_opt_in);
            let want = runtime.block_on(pairs(&ctx, &sql, "subject_id", "consent_state"));
            for name in ["s1", "s2", "s3", "v1", "v2", "v3", "v4"] {
                prop_assert_eq!(
                    identity.consent(name, double_opt_in),
                    want.get(name).map(String::as_str),
                    "subject {} (double opt-in {})", name, double_opt_in
                );
            }
        }
    }
}

#[test]
fn a_relink_regroups_both_persons_and_a_split_gives_the_visitor_back() {
    let entry = |seq, kind: &str, subject: Option<&str>| Entry {
        seq,
        at: seq,
        kind: kind.into(),
        purpose: None,
        subject_id: subject.map(str::to_owned),
        visitor_id: Some("v".into()),
    };
    let mut identity = Identity::default();
    let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(identity.apply(&[entry(1, "link", Some("alice"))])),
        ["alice", "v"]
    );
    assert_eq!(
        identity.apply(&[entry(1, "link", Some("bob"))]).len(),
        0,
        "seen already"
    );
    assert_eq!(
        names(identity.apply(&[entry(2, "link", Some("bob"))])),
        ["alice", "bob"]
    );
    assert_eq!(identity.subjects().subject_of("v"), "bob");
    assert_eq!(
        names(identity.apply(&[entry(3, "unlink", None)])),
        ["bob", "v"]
    );
    assert_eq!(identity.subjects().subject_of("v"), "v");
    assert!(identity.subjects().visitors_of.is_empty());
}
