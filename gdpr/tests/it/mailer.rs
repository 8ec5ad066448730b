//! The mailing system's side: it resolves its own list of addresses to subject ids
//! (`POST /v1/subjects/resolve`, `spur subject resolve`) and reports its own
//! unsubscribes (`POST /v1/subjects/withdraw`), which end a confirmed member's
//! marketing consent and membership at the segment service's next step.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use spur_audience::{
    ChangeKind, Engine, Ledger, LifecycleConfig, SegmentDef, StepSummary, consent_sql,
};
use spur_gdpr::{EraseOptions, admin, resolve, subject};
use spur_lake::Lake;
use spur_lake::read::{collect, int64s, strings};
use spur_testkit::{BOOT_FANS, T0, Writer, boot_views, pageview, root, signup};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MIN: i64 = 60_000;
const TOKEN: &str = "t0123456789abcdef0123456789abcdef";
const ALICE: &str = "alice@example.com";
const ALICE_PHONE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

/// A lake in a temporary directory, an identity key ring beside it and the admin
/// endpoints over both on a loopback port.
struct Setup {
    _dir: tempfile::TempDir,
    keys: tempfile::TempDir,
    w: Writer,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<spur_gdpr::Result<()>>,
}

impl Setup {
    async fn new() -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let keys = tempfile::tempdir()?;
        spur_keys::KeyRing::init(keys.path())?;
        let w = Writer::new(&root(&dir)?).await?;
        let admin = Arc::new(admin::Admin {
            lake: tokio::sync::Mutex::new(Lake::open(&root(&dir)?).await?),
            token: spur_schemas::Secret::new(TOKEN),
            resolve: subject::resolver(keys.path()),
            erase: EraseOptions::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(admin::serve(listener, admin, async {
            let _ = stopped.await;
        }));
        Ok(Setup {
            _dir: dir,
            keys,
            w,
            addr,
            stop: Some(stop),
            server,
        })
    }

    /// The subject id of an address, as the processor stores it.
    fn id(&self, email: &str) -> Result<String> {
        subject::resolver(self.keys.path())(email).map_err(anyhow::Error::msg)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Result<(u16, Value)> {
        let (status, body) = http(self.addr, path, token, body).await?;
        let value = serde_json::from_str(&body).with_context(|| format!("{status}: {body}"))?;
        Ok((status, value))
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await??;
        Ok(())
    }
}

/// One raw HTTP/1.1 POST; the status code and the body.
async fn http(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .context("no status line")?
        .parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

fn boot_fans() -> Vec<SegmentDef> {
    BOOT_FANS
        .iter()
        .map(|(name, condition)| SegmentDef {
            name: (*name).into(),
            condition: (*condition).into(),
        })
        .collect()
}

/// The subject's marketing consent state (double opt-in), if it has any entry.
async fn consent_state(lake: &mut Lake, subject: &str) -> Result<Option<String>> {
    lake.refresh().await?;
    let ctx = lake.session_context().await?;
    let batches = collect(
        &ctx,
        &format!(
            "SELECT consent_state FROM ({}) WHERE subject_id = '{subject}'",
            consent_sql(true)
        ),
    )
    .await?;
    Ok(batches
        .iter()
        .flat_map(|b| strings(b, "consent_state").unwrap_or_default())
        .flatten()
        .next())
}

/// The seq of the subject's latest marketing `grant`.
async fn grant_seq(lake: &Lake, subject: &str) -> Result<i64> {
    let ctx = lake.session_context().await?;
    let batches = collect(
        &ctx,
        &format!(
            "SELECT max(seq) AS seq FROM ledger WHERE kind = 'grant' \
             AND purpose = 'marketing' AND subject_id = '{subject}'"
        ),
    )
    .await?;
    let batch = batches.first().context("no result")?;
    let seq = int64s(batch, "seq")?.first().copied().unwrap_or_default();
    ensure!(seq > 0, "no marketing grant of {subject}");
    Ok(seq)
}

/// The segment entries and exits of a step (not the other changes it sends, such
/// as a request for the double opt-in confirmation).
fn memberships(step: &StepSummary) -> Vec<(String, ChangeKind, String)> {
    step.changes
        .iter()
        .filter(|c| !c.segment.is_empty())
        .map(|c| (c.subject_id.clone(), c.change, c.segment.clone()))
        .collect()
}

/// Alice signs up with marketing consent, clicks the double opt-in link and reads
/// about boots: a confirmed member of `boot_fans`.
async fn confirmed_member(s: &mut Setup, engine: &mut Engine) -> Result<String> {
    let alice = s.id(ALICE)?;
    let mut rows = boot_views("a", ALICE_PHONE, T0, 5);
    let mut grant = signup("a-sign", ALICE_PHONE, T0 + 6 * MIN, &alice, true);
    grant.consent_evidence =
        Some(r#"{"purposes":["marketing"],"text_id":"nl","policy_version":"3"}"#.into());
    rows.push(grant);
    s.w.append(rows).await?;
    let step = engine.step(&mut s.w.lake, T0 + 10 * MIN, false).await?;
    ensure!(
        memberships(&step).is_empty(),
        "entered unconfirmed: {:?}",
        step.changes
    );
    ensure!(consent_state(&mut s.w.lake, &alice).await?.as_deref() == Some("pending"));

    // The click on the signed confirmation link, as the collector records it.
    let seq = grant_seq(&s.w.lake, &alice).await?;
    let mut confirm = pageview("a-confirm", &alice, "s-c", T0 + 20 * MIN, "/", &[]);
    confirm.event_type = "consent".into();
    confirm.visitor_kind = "subject".into();
    confirm.site_id = String::new();
    confirm.url = None;
    confirm.path = None;
    confirm.consent_purposes = Some(r#"{"marketing":"granted"}"#.into());
    confirm.consent_evidence = Some(
        json!({"purposes": ["marketing"], "confirmation": true,
               "method": "double_opt_in_link", "grant_seq": seq})
        .to_string(),
    );
    s.w.append(vec![confirm]).await?;
    let step = engine.step(&mut s.w.lake, T0 + 21 * MIN, false).await?;
    let entered = memberships(&step);
    ensure!(
        entered == [(alice.clone(), ChangeKind::Entered, "boot_fans".to_owned())],
        "{entered:?}"
    );
    ensure!(consent_state(&mut s.w.lake, &alice).await?.as_deref() == Some("granted"));
    Ok(alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_withdrawal_ends_consent_and_membership() -> Result<()> {
    let mut s = Setup::new().await?;
    let lifecycle = LifecycleConfig::default();
    ensure!(lifecycle.double_opt_in);
    let mut engine = Engine::load(&s.w.lake, &lifecycle, &boot_fans(), &Default::default()).await?;
    let alice = confirmed_member(&mut s, &mut engine).await?;

    // Without the token nothing happens.
    let body = json!({"subject": ALICE}).to_string();
    for token in [None, Some("t0123456789abcdef0123456789abcdeX")] {
        let (status, _) = http(s.addr, "/v1/subjects/withdraw", token, &body).await?;
        ensure!(status == 401, "{token:?}: {status}");
    }
    ensure!(consent_state(&mut s.w.lake, &alice).await?.as_deref() == Some("granted"));
    // An unknown purpose is refused, and changes nothing either.
    let (status, refused) = s
        .post(
            "/v1/subjects/withdraw",
            Some(TOKEN),
            &json!({"subject": ALICE, "purpose": "everything"}).to_string(),
        )
        .await?;
    ensure!(status == 400, "{status}: {refused}");
    ensure!(consent_state(&mut s.w.lake, &alice).await?.as_deref() == Some("granted"));

    // The mailer names her by address (marketing by default).
    let (status, answer) = s.post("/v1/subjects/withdraw", Some(TOKEN), &body).await?;
    ensure!(status == 200, "{status}: {answer}");
    ensure!(
        answer["withdrawn"] == "marketing" && answer["subject_id"] == alice.as_str(),
        "{answer}"
    );
    ensure!(
        !answer.to_string().contains(ALICE),
        "the address is echoed: {answer}"
    );
    let seq = answer["seq"].as_i64().context("seq")?;
    s.w.lake.refresh().await?;
    let ctx = s.w.lake.session_context().await?;
    let entry = collect(
        &ctx,
        &format!("SELECT kind, purpose, subject_id, evidence FROM ledger WHERE seq = {seq}"),
    )
    .await?;
    let entry = entry.first().context("no entry with the answered seq")?;
    ensure!(strings(entry, "kind")?[0].as_deref() == Some("withdraw"));
    ensure!(strings(entry, "purpose")?[0].as_deref() == Some("marketing"));
    ensure!(strings(entry, "subject_id")?[0].as_deref() == Some(alice.as_str()));
    let evidence: Value =
        serde_json::from_str(strings(entry, "evidence")?[0].as_deref().unwrap_or("{}"))?;
    ensure!(
        evidence["method"] == admin::MAILER_UNSUBSCRIBE_METHOD,
        "{evidence}"
    );
    ensure!(consent_state(&mut s.w.lake, &alice).await?.as_deref() == Some("withdrawn"));
    ensure!(spur_audience::verify(&s.w.lake).await?.problem.is_none());

    // The segment service's next step lets her go.
    let step = engine.step(&mut s.w.lake, T0 + 40 * MIN, false).await?;
    let exits: Vec<_> = step
        .changes
        .iter()
        .filter(|c| c.segment == "boot_fans")
        .map(|c| (c.subject_id.clone(), c.change, c.reason.clone()))
        .collect();
    ensure!(
        exits
            == [(
                alice.clone(),
                ChangeKind::Exited,
                "consent_withdrawn".to_owned()
            )],
        "{exits:?}"
    );
    s.stop().await
}

#[tokio::test]
async fn concurrent_withdrawals_all_land_in_one_chain() -> Result<()> {
    // Two writers on one ledger at the same moment: the loser of the commit race
    // retries on the new head instead of failing or forking the chain.
    let dir = tempfile::tempdir()?;
    let mut w = Writer::new(&root(&dir)?).await?;
    w.append(vec![signup(
        "s",
        ALICE_PHONE,
        T0,
        "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0",
        true,
    )])
    .await?;
    Ledger::load(&w.lake)
        .await?
        .step(&mut w.lake, T0, None)
        .await?;
    let mut one = Lake::open(&root(&dir)?).await?;
    let mut two = Lake::open(&root(&dir)?).await?;
    let (a, b) = tokio::join!(
        admin::withdraw(&mut one, "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0", None, T0 + MIN),
        admin::withdraw(
            &mut two,
            "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0",
            Some("analytics".into()),
            T0 + MIN
        ),
    );
    let (a, b) = (a?, b?);
    ensure!(a["seq"] != b["seq"], "{a} {b}");
    let report = spur_audience::verify(&w.lake).await?;
    ensure!(report.problem.is_none(), "{report:?}");
    w.lake.refresh().await?;
    let ctx = w.lake.session_context().await?;
    let batches = collect(
        &ctx,
        "SELECT purpose FROM ledger WHERE kind = 'withdraw' ORDER BY purpose",
    )
    .await?;
    let purposes: Vec<_> = batches
        .iter()
        .flat_map(|b| strings(b, "purpose").unwrap_or_default())
        .flatten()
        .collect();
    ensure!(purposes == ["analytics", "marketing"], "{purposes:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_list_resolves_to_subject_ids() -> Result<()> {
    let mut s = Setup::new().await?;
    let alice = s.id(ALICE)?;
    s.w.append(vec![signup("a-sign", ALICE_PHONE, T0, &alice, true)])
        .await?;
    Ledger::load(&s.w.lake)
        .await?
        .step(&mut s.w.lake, T0 + MIN, None)
        .await?;
    let bob = s.id("bob@example.com")?;

    let emails = json!({"emails": [" Alice@Example.COM", "bob@example.com", "not-an-address"]});
    let (status, _) = http(s.addr, "/v1/subjects/resolve", None, &emails.to_string()).await?;
    ensure!(status == 401, "{status}");
    let (status, answer) = s
        .post("/v1/subjects/resolve", Some(TOKEN), &emails.to_string())
        .await?;
    ensure!(status == 200, "{status}: {answer}");
    ensure!(
        answer
            == json!({"subjects": [
                {"email": " Alice@Example.COM", "subject_id": alice, "known": true},
                {"email": "bob@example.com", "subject_id": bob, "known": false},
                {"email": "not-an-address", "subject_id": null, "known": null,
                 "error": resolve::INVALID_EMAIL},
            ]}),
        "{answer}"
    );

    // The cap counts addresses; the body limit bytes.
    let many: Vec<String> = (0..=resolve::MAX_EMAILS)
        .map(|i| format!("p{i}@example.com"))
        .collect();
    let (status, refused) = s
        .post(
            "/v1/subjects/resolve",
            Some(TOKEN),
            &json!({ "emails": many }).to_string(),
        )
        .await?;
    ensure!(
        status == 413 && refused["error"] == "too_many_emails",
        "{status}: {refused}"
    );
    let (status, answer) = s
        .post(
            "/v1/subjects/resolve",
            Some(TOKEN),
            &json!({ "emails": &many[..resolve::MAX_EMAILS] }).to_string(),
        )
        .await?;
    ensure!(status == 200, "{status}");
    ensure!(answer["subjects"].as_array().map(Vec::len) == Some(resolve::MAX_EMAILS));
    let huge = json!({ "emails": ["x".repeat(5 << 20)] }).to_string();
    let (status, refused) = s.post("/v1/subjects/resolve", Some(TOKEN), &huge).await?;
    ensure!(
        status == 413 && refused["error"] == "body_too_large",
        "{status}"
    );
    // Other endpoints keep their 4 KiB limit.
    let big = json!({ "subject": "x".repeat(5000) }).to_string();
    let (status, _) = s.post("/v1/subjects/withdraw", Some(TOKEN), &big).await?;
    ensure!(status == 413, "{status}");

    // The CLI path: CSV in, CSV out, the same ids; invalid rows are named.
    let pseudonym = subject::email_pseudonyms(s.keys.path()).map_err(anyhow::Error::msg)?;
    let list = "email,name\r\nalice@example.com,Alice\r\n=cmd@example.com,Eve\r\nbob\r\n";
    let out = resolve::resolve_list(&s.w.lake, list, &pseudonym).await?;
    let eve = s.id("=cmd@example.com")?;
    ensure!(
        out.csv
            == format!(
                "email,subject_id,known,error\r\nalice@example.com,{alice},true,\r\n\
                 '=cmd@example.com,{eve},false,\r\nbob,,,not an e-mail address\r\n"
            ),
        "{}",
        out.csv
    );
    ensure!(out.invalid_rows == [4], "{:?}", out.invalid_rows);
    s.stop().await
}
