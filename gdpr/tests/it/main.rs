//! Integration tests of the GDPR duties over a real lake: one binary (it links
//! DataFusion), one module per behaviour. Every test writes its own scripted history
//! of two people (`spur_testkit`) into a lake in a temporary directory; the admin
//! endpoints are served on a loopback port and spoken to in raw HTTP/1.1. `mailer`:
//! list resolution and the mailing system's withdrawals; `privacy`: the duties.

mod mailer;
mod privacy;
mod vault;
