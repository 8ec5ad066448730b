//! Logins of the PostgreSQL-wire server: SCRAM-SHA-256 against `query.users`. The
//! server keeps only each password's salted hash (salt drawn at start-up), so the
//! password itself never crosses the wire and is not held beyond start-up. An
//! unknown user gets a decoy hash and fails exactly like a wrong password.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use std::fmt::Debug;

use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::PgWireResult;
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::User;

/// PBKDF2 rounds of the salted passwords: SCRAM's minimum, as PostgreSQL uses.
const ITERATIONS: usize = 4096;

/// Salted SCRAM passwords by user name.
pub(crate) struct Users {
    salted: HashMap<String, Salted>,
    decoy: Salted,
}

struct Salted {
    salt: Vec<u8>,
    password: Vec<u8>,
}

impl Salted {
    fn new(password: &str) -> Salted {
        let salt = rand::random::<[u8; 16]>().to_vec();
        let password = gen_salted_password(password, &salt, ITERATIONS);
        Salted { salt, password }
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the hashes are as good as passwords for this server.
        f.debug_struct("Users")
            .field("names", &self.salted.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Users {
    pub(crate) fn new(users: &[User]) -> Users {
        let salted = users
            .iter()
            .map(|user| (user.name.clone(), Salted::new(user.password.expose())))
            .collect();
        let decoy = Salted::new(&hex_token());
        Users { salted, decoy }
    }
}

fn hex_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salted = login
            .user()
            .and_then(|name| self.salted.get(name))
            .unwrap_or(&self.decoy);
        Ok(Password::new(
            Some(salted.salt.clone()),
            salted.password.clone(),
        ))
    }
}

/// The start-up handler: SCRAM-SHA-256 authentication (bound to the TLS
/// certificate, `-PLUS`, when `cert_pem` is given), then the server parameters; the
/// connection is registered with `connections` so that a `CancelRequest` finds it.
pub(crate) fn startup_handler(
    users: Arc<Users>,
    cert_pem: Option<&[u8]>,
    connections: Arc<ConnectionManager>,
) -> crate::Result<SASLAuthStartupHandler<DefaultServerParameterProvider>> {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = crate::postgres::SERVER_VERSION.into();
    parameters.default_transaction_read_only = true;
    parameters.is_superuser = false;
    parameters.scram_iterations = ITERATIONS;
    let mut scram = ScramAuth::new(users);
    scram.set_iterations(ITERATIONS);
    if let Some(pem) = cert_pem {
        scram.configure_certificate(pem).map_err(|e| {
            crate::Error::Config(format!(
                "query.tls: certificate for SCRAM channel binding: {e}"
            ))
        })?;
    }
    Ok(SASLAuthStartupHandler::new(Arc::new(parameters))
        .with_scram(scram)
        .with_connection_manager(connections))
}

/// Refuses a connection that did not negotiate TLS when the server requires it
/// (`query.tls` set and `query.allow_plaintext` not): otherwise a client without
/// `sslmode=require` would send its queries in the clear to a TLS server.
pub(crate) struct RequireTls<H> {
    pub(crate) inner: Arc<H>,
    pub(crate) required: bool,
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for RequireTls<H> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.required
            && !client.is_secure()
            && matches!(message, PgWireFrontendMessage::Startup(_))
        {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "the Spur SQL server requires TLS: connect with sslmode=require (or stricter)"
                    .into(),
            ))));
        }
        self.inner.on_startup(client, message).await
    }
}
