//! The SQL side of a connection: the simple query protocol (psql; several
//! statements in one message run in order, and the first failure ends the batch)
//! and the extended protocol (Parse/Bind/Describe/Execute, as tokio-postgres, JDBC
//! and most drivers use; `$1` parameters bound as typed values). Both go through the
//! same [`Catalog`] calls as `spur sql`: guard, plan in a memory-bounded session,
//! plan check, execute. Session commands (`BEGIN`, `SET application_name`, …) are
//! answered by `session.rs`. Every failure becomes an `ErrorResponse`; the
//! connection stays usable.
//!
//! A `CancelRequest` for the connection (pgwire's connection manager matches its
//! key) ends the result being sent with SQLSTATE 57014, and dropping the result
//! stream stops DataFusion's work on it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use datafusion::arrow::datatypes::DataType;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Sink, StreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use tracing::debug;

use super::cancel::Cancels;
use super::{encode, session};
use crate::catalog::{Catalog, Planned};
use crate::error::Error;
use crate::guard::{self, Checked, Session};

/// Queries running now (their results not yet fully sent), for graceful shutdown.
#[derive(Debug, Default)]
pub(crate) struct ActiveQueries(AtomicUsize);

impl ActiveQueries {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn start(self: &Arc<Self>) -> ActiveQuery {
        self.0.fetch_add(1, Ordering::SeqCst);
        ActiveQuery(self.clone())
    }
}

/// Counts as active until dropped (with the result stream that holds it).
struct ActiveQuery(Arc<ActiveQueries>);

impl Drop for ActiveQuery {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers both protocols for every connection.
#[derive(Debug)]
pub(crate) struct Backend {
    catalog: Arc<Catalog>,
    parser: Arc<Parser>,
    active: Arc<ActiveQueries>,
    cancels: Arc<Cancels>,
}

impl Backend {
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        active: Arc<ActiveQueries>,
        cancels: Arc<Cancels>,
    ) -> Backend {
        Backend {
            parser: Arc::new(Parser {
                catalog: catalog.clone(),
            }),
            catalog,
            active,
            cancels,
        }
    }

    /// Executes a planned statement; rows are encoded as the client reads them, until
    /// the client cancels.
    async fn respond(
        &self,
        planned: Planned,
        format: &Format,
        cancel: Cancel,
    ) -> PgWireResult<Response> {
        let active = self.active.start();
        let stream = self.catalog.execute(planned).await.map_err(pg_error)?;
        let fields = Arc::new(encode::fields(stream.schema().as_ref(), format));
        let rows = row_stream(stream, fields.clone(), self.catalog.clone(), active);
        Ok(Response::Query(QueryResponse::new(
            fields,
            until_cancelled(rows, cancel),
        )))
    }
}

/// Resolves when the client cancels (a `CancelRequest` with this connection's
/// key, see `cancel.rs`); shared by the statements of one message.
type Cancel = Shared<BoxFuture<'static, ()>>;

/// `rows`, ended by an error (SQLSTATE 57014, as PostgreSQL) if `cancel` resolves
/// first; the rest of the query is dropped, and its work with it.
fn until_cancelled(
    rows: impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static,
    cancel: Cancel,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let stop = async move {
        cancel.await;
        flag.store(true, Ordering::SeqCst);
    };
    rows.take_until(stop).chain(
        stream::once(async move { cancelled.load(Ordering::SeqCst) }).filter_map(
            |cancelled| async move {
                cancelled.then(|| {
                    debug!("query cancelled by the client");
                    Err(user_error(
                        "57014",
                        "canceling statement due to user request".into(),
                    ))
                })
            },
        ),
    )
}

fn row_stream(
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    catalog: Arc<Catalog>,
    active: ActiveQuery,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| {
            let _active = &active;
            let rows = batch
                .map_err(|e| pg_error(catalog.error(e)))
                .and_then(|batch| encode::rows(&batch, &fields));
            match rows {
                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(error) => vec![Err(error)],
            }
        })
        .flat_map(stream::iter)
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The whole text is checked before anything runs.
        let statements = guard::parse(query).map_err(pg_error)?;
        let cancel = self.cancels.watch(client).shared();
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match statement {
                Checked::Session(command) => {
                    if let Session::Deallocate(Some(name)) = &command {
                        client.portal_store().rm_statement(name);
                    }
                    session::respond(client, &command, &Format::UnifiedText)
                }
                Checked::Sql(statement) => match self.catalog.plan(statement).await {
                    Ok(planned) => {
                        self.respond(planned, &Format::UnifiedText, cancel.clone())
                            .await
                    }
                    Err(error) => Err(pg_error(error)),
                },
            };
            match response {
                Ok(response) => responses.push(response),
                Err(error) => {
                    // Like PostgreSQL: results so far are sent, the rest is skipped.
                    responses.push(Response::Error(Box::new(error_info(error))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement prepared with Parse: a query checked and planned once for its
/// description (columns, parameter types) and planned again at each Execute, so
/// that it reads the tables as they are then; or a session command.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Sql {
        statement: Box<DfStatement>,
        plan: LogicalPlan,
    },
    Session(Session),
}

#[derive(Debug)]
pub(crate) struct Parser {
    catalog: Arc<Catalog>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = guard::parse(sql).map_err(pg_error)?;
        if statements.len() != 1 {
            return Err(user_error(
                "42601",
                "a prepared statement holds exactly one statement".into(),
            ));
        }
        match statements.remove(0) {
            Checked::Session(command) => Ok(Some(Prepared::Session(command))),
            Checked::Sql(statement) => {
                let planned = self
                    .catalog
                    .plan(statement.clone())
                    .await
                    .map_err(pg_error)?;
                Ok(Some(Prepared::Sql {
                    statement: Box::new(statement),
                    plan: planned.plan().clone(),
                }))
            }
        }
    }

    fn get_parameter_types(&self, prepared: &Prepared) -> PgWireResult<Vec<Type>> {
        let Prepared::Sql { plan, .. } = prepared else {
            return Ok(Vec::new());
        };
        Ok(parameter_types(plan)?
            .iter()
            .map(|data_type| data_type.as_ref().map_or(Type::TEXT, encode::pg_type))
            .collect())
    }

    fn get_result_schema(
        &self,
        prepared: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.cloned().unwrap_or(Format::UnifiedBinary);
        Ok(match prepared {
            Prepared::Sql { plan, .. } => encode::fields(plan.schema().as_arrow(), &format),
            Prepared::Session(command) => session::fields(command, &format),
        })
    }
}

/// The types DataFusion inferred for `$1 … $n`, in order (`None` where it could not,
/// or where the plan does not use the parameter: a rewritten catalog query may drop
/// some of a client's parameters).
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types: HashMap<String, Option<DataType>> = plan
        .get_parameter_types()
        .map_err(|e| pg_error(Error::Query(e)))?;
    let mut numbered = Vec::new();
    for (name, data_type) in types {
        let index = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                user_error(
                    "42P02",
                    format!("parameter {name}: parameters are numbered $1, $2, …"),
                )
            })?;
        if numbered.len() < index {
            numbered.resize(index, None);
        }
        numbered[index - 1] = data_type;
    }
    Ok(numbered)
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = match &portal.statement.statement {
            Prepared::Session(command) => {
                if let Session::Deallocate(Some(name)) = command {
                    client.portal_store().rm_statement(name);
                }
                return session::respond(client, command, &portal.result_column_format);
            }
            Prepared::Sql { statement, .. } => statement,
        };
        let cancel = self.cancels.watch(client).shared();
        let mut planned = self
            .catalog
            .plan((**statement).clone())
            .await
            .map_err(pg_error)?;
        let types = parameter_types(planned.plan())?;
        if !types.is_empty() || portal.parameter_len() > 0 {
            let values = bind(portal, &types)?;
            planned = planned.with_params(values).map_err(pg_error)?;
        }
        debug!(parameters = types.len(), "extended query");
        self.respond(planned, &portal.result_column_format, cancel)
            .await
    }
}

/// Decodes the Bind message's parameters into the types the plan expects. A client
/// may bind more parameters than the plan uses (see [`parameter_types`]), never fewer.
fn bind(portal: &Portal<Prepared>, types: &[Option<DataType>]) -> PgWireResult<Vec<ScalarValue>> {
    if portal.parameter_len() < types.len() {
        return Err(user_error(
            "08P01",
            format!(
                "the statement has {} parameters, {} were bound",
                types.len(),
                portal.parameter_len()
            ),
        ));
    }
    let declared = &portal.statement.parameter_types;
    (0..portal.parameter_len())
        .map(|index| {
            let expected = types.get(index).cloned().flatten();
            let pg_type = declared
                .get(index)
                .cloned()
                .flatten()
                .or_else(|| expected.as_ref().map(encode::pg_type))
                .unwrap_or(Type::TEXT);
            let value = decode_parameter(portal, index, &pg_type)?;
            match expected {
                Some(expected) if value.data_type() != expected => value
                    .cast_to(&expected)
                    .map_err(|e| pg_error(Error::Query(e))),
                _ => Ok(value),
            }
        })
        .collect()
}

fn decode_parameter(
    portal: &Portal<Prepared>,
    index: usize,
    pg_type: &Type,
) -> PgWireResult<ScalarValue> {
    let utc = || Some(Arc::<str>::from("UTC"));
    Ok(match *pg_type {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(index, pg_type)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(index, pg_type)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(index, pg_type)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(index, pg_type)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(index, pg_type)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(index, pg_type)?),
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<NaiveDate>(index, pg_type)?
                .map(|date| date.to_epoch_days()),
        ),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(index, pg_type)?
                .map(|time| time.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(index, pg_type)?
                .map(|time| time.timestamp_micros()),
            utc(),
        ),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(portal.parameter::<String>(index, pg_type)?)
        }
        ref other => {
            return Err(user_error(
                "0A000",
                format!("parameters of type {} are not supported", other.name()),
            ));
        }
    })
}

/// What the client is told: SQLSTATE per kind of failure, the full message chain.
fn error_info(error: PgWireError) -> ErrorInfo {
    match error {
        PgWireError::UserError(info) => *info,
        other => ErrorInfo::new("ERROR".into(), "XX000".into(), other.to_string()),
    }
}

pub(crate) fn pg_error(error: Error) -> PgWireError {
    let code = match &error {
        // read_only_sql_transaction: what PostgreSQL says to writes on a standby.
        Error::Refused(_) => "25006",
        Error::MemoryLimit { .. } => "53200",
        Error::Query(inner) => match inner.find_root() {
            datafusion::error::DataFusionError::SQL(..) => "42601",
            datafusion::error::DataFusionError::Plan(_)
            | datafusion::error::DataFusionError::SchemaError(..) => "42000",
            datafusion::error::DataFusionError::NotImplemented(_) => "0A000",
            _ => "XX000",
        },
        Error::Lake(_) => "58030",
        Error::Config(_) | Error::Output(_) | Error::Server { .. } => "XX000",
    };
    user_error(code, error.chain())
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}
