//! Integration tests of the segment service: one binary (it links DataFusion and
//! librdkafka). The service runs end to end inside the test process over a real lake
//! in a temporary directory (a scripted history from `spur_testkit`), with
//! librdkafka's mock cluster as the broker and a scripted webhook receiver on a
//! loopback port; it is crashed and restarted, and what reached the topic and the
//! receiver is checked (`dispatch.rs`); a receiver down past `max_age` has its
//! changes parked and replayed, in order, with the body live delivery sends
//! (`parking.rs`).

mod dispatch;
mod parking;
