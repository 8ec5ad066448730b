//! The processor's component tests: librdkafka's mock cluster, a temporary lake and
//! key directory, the real consume → Delta loop. Crash (SIGKILL) and multi-process
//! tests run against a real broker in the workspace's end-to-end suite.

mod common;
mod lake_contents;
mod ops;
mod restart;
mod write_failure;
