//! Bytes no Kafka client sends: the connection is closed, the broker keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::start;

/// ApiVersions v0 (no body): the probe every client sends first.
fn api_versions(version: i16, correlation: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&correlation.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

async fn answer(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len))
        .await
        .expect("an answer or a close, not a hang")
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn garbage_oversized_and_unknown_requests_close_the_connection_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bootstrap, _stop, _task) = start(dir.path()).await;
    let hostile: Vec<Vec<u8>> = vec![
        // A 2 GB frame.
        i32::MAX.to_be_bytes().to_vec(),
        // A negative length.
        (-5i32).to_be_bytes().to_vec(),
        // An unknown API key.
        [&8i32.to_be_bytes()[..], &[0x7f, 0x00, 0, 0, 0, 0, 0, 1]].concat(),
        // Produce v3 whose body is cut short.
        [
            &10i32.to_be_bytes()[..],
            &[0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff],
        ]
        .concat(),
        // Fetch at a version nobody supports.
        [&8i32.to_be_bytes()[..], &[0, 1, 0x7f, 0, 0, 0, 0, 1]].concat(),
    ];
    for bytes in hostile {
        let mut s = TcpStream::connect(&bootstrap).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        assert!(closed(&mut s).await, "{bytes:?} left the connection open");
    }
    // The broker still answers.
    let mut s = TcpStream::connect(&bootstrap).await.expect("connect");
    s.write_all(&api_versions(0, 7)).await.expect("write");
    let body = answer(&mut s).await.expect("answered");
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(&body[4..6], &0i16.to_be_bytes(), "no error");
}

#[tokio::test]
async fn a_too_new_api_versions_is_answered_at_v0_with_the_versions_supported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bootstrap, _stop, _task) = start(dir.path()).await;
    let mut s = TcpStream::connect(&bootstrap).await.expect("connect");
    s.write_all(&api_versions(99, 3)).await.expect("write");
    let body = answer(&mut s).await.expect("answered");
    assert_eq!(&body[..4], &3i32.to_be_bytes());
    assert_eq!(
        i16::from_be_bytes([body[4], body[5]]),
        35,
        "UNSUPPORTED_VERSION"
    );
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]);
    assert_eq!(count as usize, spur_broker::api::SUPPORTED.len());
}
