//! Component tests of the embedded broker: the broker in-process on a free loopback
//! port, real librdkafka clients (the ones every Spur service uses) over TCP, and
//! hostile bytes on a raw socket.

mod clients;
mod hostile;

use std::time::Duration;

use spur_broker::{Broker, Config};
use tokio::sync::oneshot;

/// A broker serving on a free port with its data in `dir`; stops when the returned
/// sender is dropped or fired.
pub async fn start(
    dir: &std::path::Path,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        retention_check: Duration::from_millis(200),
        ..Config::default()
    };
    let broker = Broker::bind(config).await.expect("bind");
    let bootstrap = broker.bootstrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(broker.run(async move {
        let _ = stopped.await;
    }));
    (bootstrap, stop, task)
}
