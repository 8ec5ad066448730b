//! `spur up`: the whole pipeline in one process — the embedded broker, collector (with
//! the demo shop), processor, segment service, SQL server and admin API — under one
//! data directory, for trying Spur and for small sites.
//!
//! On first start it writes `<data>/spur.toml` with generated secrets (unsubscribe and
//! confirmation keys, the admin token, the SQL password, the inbox's webhook secret)
//! and paths inside the data directory, and creates the pseudonym keys; later starts
//! read that file, so the user edits it like any Spur configuration. `--config` uses
//! another file instead; `--brokers` / `--lake` point the same process at an external
//! Kafka cluster and object store (then no broker is embedded).
//!
//! Every listener is bound before anything starts, so a port already taken fails at
//! once with the key that sets it. On SIGTERM or Ctrl-C the services stop together
//! (the collector answers what it accepted, the processor commits what it can), and
//! the broker stops last.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use spur_lake::Lake;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::settings::{Settings, shutdown_signal};

/// What `spur up` is told on the command line.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the broker's topics, the lake, the keys and the generated configuration
    /// are kept.
    #[arg(long, default_value = "spur-data")]
    pub data_dir: PathBuf,
    /// Use this Kafka cluster (`host:port,...`) instead of the embedded broker.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Use this lake root (a directory or an object-store URL) instead of
    /// `<data-dir>/lake`.
    #[arg(long)]
    pub lake: Option<String>,
}

/// Loads `--config`, or `<data>/spur.toml` (written with generated secrets on first
/// start). Returns the settings and the file they came from.
pub fn load(config: Option<&Path>, args: &UpArgs) -> anyhow::Result<(Settings, PathBuf)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let path = match config {
        Some(path) => path.to_path_buf(),
        None => {
            let path = data.join("spur.toml");
            if !path.exists() {
                spur_keys::files::write_new_private(&path, generated_config(&data).as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "spur up: wrote {} (generated secrets; edit it to change ports, sites, segments)",
                    path.display()
                );
            }
            path
        }
    };
    let mut settings = Settings::load(Some(&path))?;
    if let Some(brokers) = &args.brokers {
        settings.kafka.brokers = brokers.clone();
    }
    if let Some(lake) = &args.lake {
        settings.lake.root = lake.clone();
    }
    complete(&mut settings)?;
    Ok((settings, path))
}

/// What `spur up` derives from the ports rather than writing it down: the links in
/// mails point at this collector, and the inbox receives every change.
fn complete(settings: &mut Settings) -> anyhow::Result<()> {
    let collector = format!("http://localhost:{}", settings.collector.listen.port());
    settings
        .unsubscribe
        .url
        .get_or_insert_with(|| format!("{collector}/v1/unsubscribe"));
    settings
        .confirm
        .url
        .get_or_insert_with(|| format!("{collector}/v1/confirm"));
    let inbox = settings.console.webhook_secret.as_ref().map(|secret| {
        serde_json::json!({
            "name": INBOX_WEBHOOK,
            "url": format!("http://{}/inbox/webhook", settings.console.listen),
            "secret": secret.expose(),
        })
    });
    if let Some(inbox) = inbox
        && !settings
            .segments
            .webhooks
            .iter()
            .any(|w| w.name == INBOX_WEBHOOK)
    {
        settings
            .segments
            .webhooks
            .push(serde_json::from_value(inbox).context("the inbox webhook")?);
    }
    Ok(())
}

/// The name of the webhook that feeds the demo inbox.
const INBOX_WEBHOOK: &str = "inbox";

fn secret(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The configuration `spur up` starts from: every default of `spur.example.toml`,
/// paths under `data`, fresh secrets, the demo site and a segment to watch.
fn generated_config(data: &Path) -> String {
    // Quoted and escaped as TOML strings, whatever the path holds.
    let path = |sub: &str| toml::Value::String(data.join(sub).display().to_string()).to_string();
    let (broker, lake, keys, state) = (
        path("broker"),
        path("lake"),
        path("keys"),
        path("state/segments"),
    );
    let (unsubscribe, confirm, admin, sql) = (secret(48), secret(48), secret(48), secret(24));
    let hook = crate::console::generate_webhook_secret();
    format!(
        r#"# Written by `spur up` on its first start: the whole pipeline on this machine.
# Edit and restart to change it; every key is documented in spur.example.toml.
# Secrets below were generated for this installation: keep this file private.

[kafka]
brokers = "127.0.0.1:9092"        # the embedded broker ([broker]); `--brokers` overrides

[broker]
listen = "127.0.0.1:9092"
data_dir = {broker}

[lake]
root = {lake}                 # `--lake` overrides

[keys]
dir = {keys}

[unsubscribe]
key = "{unsubscribe}"
# url: http://localhost:<collector port>/v1/unsubscribe unless set

[confirm]
key = "{confirm}"
# url: http://localhost:<collector port>/v1/confirm unless set

[collector]
listen = "127.0.0.1:8080"
demo = true                       # the demo shop at /demo/ (site "demo" below)

[[collector.sites]]
id = "demo"                       # the demo shop at /demo/
hosts = ["localhost", "127.0.0.1"]

[processor]
listen = "127.0.0.1:9101"
flush_interval = "1s"             # seconds from a click to the lake (default 5s)

[query]
listen = "127.0.0.1:5433"

[[query.users]]
name = "analyst"
password = "{sql}"

[scoring]
reference_dwell = "5s"            # a 5 s view counts fully (default 30s): quick demos

[segments]
interval = "1s"
state_dir = {state}
listen = "127.0.0.1:9102"

[[segments.define]]
name = "boot_fans"
where = "interest['boots'] >= 0.1"

# Add [[segments.webhooks]] for your mailing system (spur.example.toml). Every
# change also goes to the demo inbox ([console]) as webhook "inbox".

[admin]
listen = "127.0.0.1:9103"
token = "{admin}"

[console]                         # the demo inbox (/inbox/) and the dashboard (/dashboard/)
listen = "127.0.0.1:9104"
webhook_secret = "{hook}"
"#
    )
}

/// A listener for a service, or an error naming the port and the key that sets it.
async fn bind(addr: SocketAddr, key: &str, config: &Path) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {} is already taken ({addr}): set `{key}` in {} to another port",
                addr.port(),
                config.display()
            )
        } else {
            anyhow::anyhow!(
                "cannot listen on {addr} (`{key}` in {}): {e}",
                config.display()
            )
        }
    })
}

/// Completes when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

type Service = (&'static str, tokio::task::JoinHandle<anyhow::Result<()>>);

pub async fn run(mut settings: Settings, config: PathBuf, args: UpArgs) -> anyhow::Result<()> {
    settings.validate()?;
    let embedded = args.brokers.is_none();

    // Every port first: nothing starts if one is taken.
    let broker = if embedded {
        settings.kafka.brokers = format!("{}", settings.broker.listen);
        let broker = spur_broker::Broker::bind(settings.broker.clone())
            .await
            .map_err(|e| match e {
                spur_broker::Error::Bind { addr, source }
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    anyhow::anyhow!(
                        "port {} is already taken ({addr}): set `broker.listen` in {} to another port",
                        addr.port(),
                        config.display()
                    )
                }
                other => other.into(),
            })?;
        settings.kafka.brokers = broker.bootstrap();
        Some(broker)
    } else {
        None
    };
    let collector_listener = bind(settings.collector.listen, "collector.listen", &config).await?;
    let processor_listener = bind(settings.processor.listen, "processor.listen", &config).await?;
    let segments_listener = bind(settings.segments.listen, "segments.listen", &config).await?;
    settings.query.check_listen(settings.query.listen)?;
    let sql_listener = bind(settings.query.listen, "query.listen", &config).await?;
    let admin_listener = bind(settings.admin.listen, "admin.listen", &config).await?;
    let console_listener = bind(settings.console.listen, "console.listen", &config).await?;

    spur_keys::KeyRing::init(&settings.keys.dir)
        .with_context(|| format!("creating keys in {}", settings.keys.dir.display()))?;
    let root = settings.lake.root.clone();
    // Creates the tables once, before the services that read them start.
    let lake = Lake::open(&root).await.context("opening the lake")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let broker_task = broker.map(|b| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(b.run(async move {
            let _ = rx.await;
        }));
        (tx, task)
    });

    let mut services: Vec<Service> = Vec::new();
    {
        let (config, kafka, stop) = (
            settings.collector.clone(),
            settings.kafka.clone(),
            stopped(stop_rx.clone()),
        );
        services.push((
            "collector",
            tokio::spawn(async move {
                spur_collector::run(config, kafka, collector_listener, stop).await?;
                Ok(())
            }),
        ));
    }
    {
        let (config, kafka, stop) = (
            settings.processor.clone(),
            settings.kafka.clone(),
            stopped(stop_rx.clone()),
        );
        services.push((
            "processor",
            tokio::spawn(async move {
                spur_processor::run_with_listener(config, kafka, processor_listener, stop).await?;
                Ok(())
            }),
        ));
    }
    {
        let (config, kafka, stop) = (
            settings.dispatch(),
            settings.kafka.clone(),
            stopped(stop_rx.clone()),
        );
        services.push((
            "segments",
            tokio::spawn(async move {
                spur_dispatch::run(config, kafka, segments_listener, stop).await?;
                Ok(())
            }),
        ));
    }
    {
        let query = settings.query.clone();
        let lifecycle = settings.lifecycle.clone();
        let root = root.clone();
        let stop = stopped(stop_rx.clone());
        services.push((
            "sql",
            tokio::spawn(async move {
                let catalog = spur_query::Catalog::open_or_wait(&root, &lifecycle, &query).await?;
                spur_query::serve(std::sync::Arc::new(catalog), &query, sql_listener, stop).await?;
                Ok(())
            }),
        ));
    }
    {
        let token = settings.admin.token()?;
        let admin = std::sync::Arc::new(spur_gdpr::admin::Admin {
            lake: tokio::sync::Mutex::new(lake),
            token,
            resolve: spur_gdpr::subject::resolver(&settings.keys.dir),
            erase: crate::erase_options(&settings),
        });
        let stop = stopped(stop_rx.clone());
        services.push((
            "admin",
            tokio::spawn(async move {
                spur_gdpr::admin::serve(admin_listener, admin, stop).await?;
                Ok(())
            }),
        ));
    }

    {
        let console = crate::console::ConsoleConfig {
            lake_root: root.clone(),
            inbox_dir: args.data_dir.join("inbox"),
            // Without a configured secret no webhook points at the inbox; the
            // dashboard is served all the same.
            webhook_secret: settings.console.webhook_secret.clone().unwrap_or_else(|| {
                spur_schemas::secret::Secret::new(crate::console::generate_webhook_secret())
            }),
            admin_token: settings.admin.token.clone(),
            processor_metrics_url: Some(format!("http://{}/metrics", settings.processor.listen)),
            collector_url: format!("http://localhost:{}", settings.collector.listen.port()),
        };
        let stop = stopped(stop_rx.clone());
        services.push((
            "console",
            tokio::spawn(
                async move { crate::console::serve(console_listener, console, stop).await },
            ),
        ));
    }

    print_summary(&settings, &config, &args, embedded);

    // Run until a signal, or until a service fails (then stop the others).
    let mut failure: Option<anyhow::Error> = None;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let watch_services = async {
        loop {
            for (name, task) in services.iter_mut() {
                if task.is_finished() {
                    return *name;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = &mut signal => {}
        name = watch_services => {
            tracing::error!(service = name, "a service stopped; stopping the others");
        }
    }
    stop_tx.send_replace(true);
    for (name, task) in services {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(Ok(()))) => tracing::info!(service = name, "stopped"),
            Ok(Ok(Err(e))) => {
                tracing::error!(service = name, error = %format!("{e:#}"), "failed");
                failure.get_or_insert(e.context(format!("{name} failed")));
            }
            Ok(Err(e)) => {
                failure.get_or_insert(anyhow::anyhow!("{name} panicked: {e}"));
            }
            Err(_) => {
                failure.get_or_insert(anyhow::anyhow!("{name} did not stop within 60 s"));
            }
        }
    }
    if let Some((tx, task)) = broker_task {
        let _ = tx.send(());
        let _ = task.await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_summary(settings: &Settings, config: &Path, args: &UpArgs, embedded: bool) {
    let collector = settings.collector.listen;
    let web = format!("http://localhost:{}", collector.port());
    let user = settings
        .query
        .users
        .first()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| "<none: add [[query.users]]>".into());
    let sql = settings.query.listen;
    let console = format!("http://localhost:{}", settings.console.listen.port());
    let kafka = if embedded {
        format!(
            "{} (embedded broker, data in {})",
            settings.kafka.brokers,
            settings.broker.data_dir.display()
        )
    } else {
        format!("{} (external)", settings.kafka.brokers)
    };
    println!(
        "\nSpur is running.\n\
         \n  Demo shop    {web}/demo/\
         \n  Inbox        {console}/inbox/  (what a mailing system receives)\
         \n  Dashboard    {console}/dashboard/\
         \n  Tracker      {web}/spur.js  (POST {web}/v1/batch)\
         \n  SQL          psql \"postgresql://{user}@{}:{}/spur\"  (password: query.users in the config)\
         \n  Admin API    http://{}  (bearer token: admin.token in the config)\
         \n  Health       http://{}/readyz (processor)  http://{}/readyz (segments)\
         \n  Kafka        {kafka}\
         \n  Lake         {}\
         \n  Config       {}\
         \n  Data         {}\
         \n\nStop with Ctrl-C (or SIGTERM): accepted events are kept, and the next `spur up` continues.\n",
        sql.ip(),
        sql.port(),
        settings.admin.listen,
        settings.processor.listen,
        settings.segments.listen,
        settings.lake.root,
        config.display(),
        args.data_dir.display(),
    );
}
