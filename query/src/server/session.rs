//! The answers to session commands ([`guard::Session`]): what drivers send before and
//! around their queries on a read-only server. Transactions are acknowledged (and
//! the connection's transaction status follows them, as drivers check it); nothing
//! is begun, committed or undone, since nothing can be written. `SET` of a
//! [`SESSION_SETTINGS`](crate::postgres::SESSION_SETTINGS) name is kept for the connection so that `SHOW` says
//! what the client set; `RESET` and `DISCARD ALL` forget it. `DEALLOCATE name`
//! removes the prepared statement (in the handler, which has the store); pgwire's
//! store cannot be emptied at once, so `DEALLOCATE ALL` leaves the statements until
//! the connection ends (clients re-prepare under new names or replace them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream;
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;

use crate::guard::Session;

/// The settings a client `SET` on this connection (lowercase names).
#[derive(Debug, Default)]
struct Settings(Mutex<HashMap<String, String>>);

fn settings<C: ClientInfo>(client: &C) -> Arc<Settings> {
    client
        .session_extensions()
        .get_or_insert_with(Settings::default)
}

/// The value `SHOW name` gives: the client's `SET`, else what it sent at start-up
/// (`application_name`, `DateStyle`, …), else the server's.
pub(crate) fn value<C: ClientInfo>(client: &C, name: &str) -> String {
    let set = settings(client)
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    set.or_else(|| {
        client
            .metadata()
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    })
    .or_else(|| crate::postgres::setting_default(name).map(str::to_owned))
    .unwrap_or_default()
}

/// Answers a session command; `format` is the result format the client asked for
/// (`SHOW` is the only command with a result).
pub(crate) fn respond<C: ClientInfo>(
    client: &C,
    session: &Session,
    format: &Format,
) -> PgWireResult<Response> {
    let clear = |name: Option<&str>| {
        let settings = settings(client);
        let mut settings = settings.0.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(name) => drop(settings.remove(name)),
            None => settings.clear(),
        }
    };
    Ok(match session {
        Session::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Session::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
        Session::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        Session::Savepoint => Response::Execution(Tag::new("SAVEPOINT")),
        Session::SetTransaction => Response::Execution(Tag::new("SET")),
        Session::Set { name, value } => {
            settings(client)
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), value.clone());
            Response::Execution(Tag::new("SET"))
        }
        Session::Reset(name) => {
            clear(name.as_deref());
            Response::Execution(Tag::new("RESET"))
        }
        Session::DiscardAll => {
            clear(None);
            Response::Execution(Tag::new("DISCARD ALL"))
        }
        // The statement itself is removed by the caller, which holds the store.
        Session::Deallocate(Some(_)) => Response::Execution(Tag::new("DEALLOCATE")),
        Session::Deallocate(None) => Response::Execution(Tag::new("DEALLOCATE ALL")),
        Session::Show(name) => {
            let fields = Arc::new(show_fields(name, format));
            let mut encoder = DataRowEncoder::new(fields.clone());
            encoder.encode_field(&value(client, name))?;
            let row = encoder.take_row();
            Response::Query(QueryResponse::new(fields, stream::iter([Ok(row)])))
        }
    })
}

/// The columns of a session command's result: one text column for `SHOW`, none
/// for the others.
pub(crate) fn fields(session: &Session, format: &Format) -> Vec<FieldInfo> {
    match session {
        Session::Show(name) => show_fields(name, format),
        _ => Vec::new(),
    }
}

fn show_fields(name: &str, format: &Format) -> Vec<FieldInfo> {
    vec![FieldInfo::new(
        name.to_owned(),
        None,
        None,
        Type::TEXT,
        format.format_for(0),
    )]
}
