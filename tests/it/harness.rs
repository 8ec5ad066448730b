//! Processes under test: a broker (`spur broker`, or `tansu`) on a free loopback
//! port, and the `spur`
//! binary with a generated configuration, its log captured to a file.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Req, try_send};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `spur broker`: the embedded broker, durable under the test's directory.
    Embedded,
    /// The external `tansu` binary (memory storage): one test keeps Spur honest
    /// against a broker that is not its own code.
    Tansu,
}

/// A broker process on a free loopback port. Killed on drop.
pub struct Broker {
    pub port: u16,
    kind: Kind,
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// `spur broker` keeping its data under `dir`, so it survives a restart.
    pub fn embedded(dir: &Path) -> Broker {
        Broker::start(Kind::Embedded, dir)
    }

    /// `tansu` (`SPUR_TANSU`, default `tansu` on the PATH) with in-memory storage, or
    /// `None` (said on stdout) where it is not installed: `.ci/run` does not install
    /// it (`cargo install tansu --features dynostore,libsql`, ~20 minutes).
    pub fn tansu(dir: &Path) -> Option<Broker> {
        let bin = std::env::var("SPUR_TANSU").unwrap_or_else(|_| "tansu".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            println!("SKIPPED: `{bin}` is not installed; this test runs against tansu only");
            return None;
        }
        Some(Broker::start(Kind::Tansu, dir))
    }

    /// The broker named by `SPUR_IT_BROKERS` (started by `.ci/run`), or else a fresh
    /// embedded one. The returned process handle, if any, must be kept alive.
    pub fn shared_or_embedded(dir: &Path) -> (Option<Broker>, String) {
        match std::env::var("SPUR_IT_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => (None, brokers),
            _ => {
                let broker = Broker::embedded(dir);
                let brokers = broker.brokers();
                (Some(broker), brokers)
            }
        }
    }

    fn start(kind: Kind, dir: &Path) -> Broker {
        let port = free_port();
        let mut broker = Broker {
            port,
            kind,
            dir: dir.to_owned(),
            child: None,
            log: dir.join(format!("broker-{port}.log")),
        };
        broker.spawn();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let listen = format!("127.0.0.1:{}", self.port);
        let child = match self.kind {
            Kind::Embedded => Command::new(env!("CARGO_BIN_EXE_spur"))
                .args(["broker", "--listen", &listen, "--data-dir"])
                .arg(self.dir.join(format!("broker-{}", self.port)))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn spur broker"),
            Kind::Tansu => {
                let bin = std::env::var("SPUR_TANSU").unwrap_or_else(|_| "tansu".into());
                let url = format!("tcp://{listen}");
                Command::new(&bin)
                    .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"])
                    .current_dir(&self.dir)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (install it: cargo install tansu --features dynostore,libsql)"))
            }
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on {} (log: {})",
                self.port,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `spur collect` process. Killed on drop.
pub struct Spur {
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
    config: PathBuf,
    child: Child,
}

/// The configuration used by the end-to-end tests: sites `shop` (on `shop.example`)
/// and `local` (on `localhost`, for the browser test); loopback is a trusted proxy so
/// tests can set the client address with `X-Forwarded-For`.
pub fn spur_config(
    dir: &Path,
    brokers: &str,
    listen: std::net::SocketAddr,
    extra: &str,
) -> PathBuf {
    let path = dir.join("spur.toml");
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"

[collector]
listen = "{listen}"
trusted_proxies = ["127.0.0.0/8"]

[[collector.sites]]
id = "shop"
hosts = ["shop.example"]

[[collector.sites]]
id = "local"
hosts = ["localhost"]

[collector.delivery]
ack_timeout = "3s"
retry_after = "2s"
health_interval = "250ms"
topic_partitions = 3

[collector.privacy]
salt_dir = "{salt}"
{extra}
"#,
        salt = dir.join("salt").display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

impl Spur {
    pub async fn start(dir: &Path, brokers: &str, extra: &str) -> Spur {
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = spur_config(dir, brokers, addr, extra);
        let log = dir.join("spur.log");
        let child = Spur::spawn(&config, &log);
        let spur = Spur {
            addr,
            log,
            config,
            child,
        };
        spur.wait_ready(true).await;
        spur
    }

    fn spawn(config: &Path, log: &Path) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        Command::new(env!("CARGO_BIN_EXE_spur"))
            .args(["--config", config.to_str().expect("utf-8 path"), "collect"])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn spur")
    }

    /// Kills it (SIGKILL) and starts it again on the same address and configuration;
    /// does not wait for readiness.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Spur::spawn(&self.config, &self.log);
    }

    pub async fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = try_send(self.addr, Req::get("/readyz")).await
                && r.status == want
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "spur never became ready={ready}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn send(&self, req: Req) -> crate::client::Resp {
        try_send(self.addr, req).await.expect("request")
    }

    /// Kills it with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM (graceful) and returns its log.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spur {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pageview(id: &str, host: &str) -> serde_json::Value {
    json!({"type": "pageview", "id": id, "url": format!("https://{host}/")})
}

/// Another `spur` subcommand run as a process (`spur process`, ...), sharing the
/// configuration file written by [`spur_config`]. Killed on drop.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(dir: &Path, args: &[&str], log_name: &str) -> Process {
        let log = dir.join(log_name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_spur"))
            .arg("--config")
            .arg(dir.join("spur.toml"))
            .args(args)
            // `SPUR_IT_LOG` (tracing filter directives) for post-mortems.
            .env(
                "RUST_LOG",
                std::env::var("SPUR_IT_LOG")
                    .unwrap_or_else(|_| "info,buoyant_kernel=warn,deltalake_core=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn spur");
        Process { child, log }
    }

    /// SIGKILL: no flush, no commit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most 60 s) for a graceful exit; returns whether it exited
    /// successfully.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `spur <args>` to completion.
pub fn spur_once(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spur"))
        .arg("--config")
        .arg(dir.join("spur.toml"))
        .args(args)
        .output()
        .expect("run spur")
}

/// A temporary directory for one test's processes, logs and lake. With
/// `SPUR_IT_KEEP=1` it is kept after the test (its path is printed) for post-mortems.
pub fn workdir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("SPUR_IT_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    dir
}
