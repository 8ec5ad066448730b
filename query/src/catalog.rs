//! [`Catalog`]: the lake as analysts see it. Every lake table is registered under its
//! name (`events`, `sessions`; Delta providers, so `WHERE dt = …` prunes whole
//! partitions) in database `spur`, schema `public`; `information_schema` is on for
//! `SHOW TABLES`/`SHOW COLUMNS`, and `pg_catalog` with PostgreSQL's functions for
//! client tools (`crate::postgres`); the only table functions are the guard's
//! [`TABLE_FUNCTIONS`](crate::guard::TABLE_FUNCTIONS).
//!
//! Each query runs in a session of its own whose memory pool holds
//! `query.memory_limit` bytes and whose disk manager is disabled: an operator that
//! needs more memory fails the query with [`Error::MemoryLimit`] instead of spilling
//! or taking the process down. Other queries are not affected.
//!
//! New commits become visible without a restart: before a query, when
//! `query.refresh_interval` has passed since the last look, the tables load the
//! newer log entries and a fresh set of providers replaces the old one in a single
//! swap (queries already planned keep the version they started with).
//!
//! The SQL server may start before the processor has created the lake
//! ([`Catalog::open_or_wait`]): it then serves the empty catalog (`pg_catalog` and
//! `information_schema` only), says so in its log, and opens the lake at the first
//! refresh that finds it.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use spur_lake::{Lake, TableKind};
use tracing::{debug, info, warn};

use crate::config::{ByteSize, Config};
use crate::error::{Error, Result};
use crate::guard;
use crate::postgres::PgCatalog;
use spur_audience::LifecycleConfig;

/// The lake's tables, ready for analyst SQL. Shared by all connections.
#[derive(Debug)]
pub struct Catalog {
    /// `None` until the processor has created the lake (`open_or_wait`).
    lake: tokio::sync::Mutex<Option<Lake>>,
    root: String,
    pg_catalog: PgCatalog,
    current: RwLock<Snapshot>,
    memory_limit: ByteSize,
    refresh_interval: Duration,
    /// For the `profiles` and `timeline` views.
    lifecycle: LifecycleConfig,
}

#[derive(Debug, Clone)]
struct Snapshot {
    state: Arc<SessionState>,
    taken: Instant,
}

/// A statement planned in its own session, ready to run.
pub struct Planned {
    context: SessionContext,
    plan: LogicalPlan,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Planned {
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// Replaces the `$1, $2, …` placeholders with values (the wire protocol's Bind).
    pub fn with_params(self, values: Vec<datafusion::scalar::ScalarValue>) -> Result<Planned> {
        let plan = self.plan.with_param_values(values).map_err(Error::Query)?;
        Ok(Planned { plan, ..self })
    }
}

impl Catalog {
    /// Opens the lake at `lake_root` for reading, with the analyst views of
    /// `lifecycle`. A local root must already hold the tables (written by the
    /// processor): a wrong path is a configuration error, not an empty lake.
    pub async fn open(
        lake_root: &str,
        lifecycle: &LifecycleConfig,
        config: &Config,
    ) -> Result<Catalog> {
        config.validate()?;
        check_local_lake(lake_root)?;
        Catalog::new(lake_root, lifecycle, config).await
    }

    /// Like [`Catalog::open`], but a local root without the processor's tables yet is
    /// not an error: the catalog is empty (logged as a warning) until a refresh finds
    /// them. For the SQL server, which may start before the processor.
    pub async fn open_or_wait(
        lake_root: &str,
        lifecycle: &LifecycleConfig,
        config: &Config,
    ) -> Result<Catalog> {
        config.validate()?;
        Catalog::new(lake_root, lifecycle, config).await
    }

    async fn new(lake_root: &str, lifecycle: &LifecycleConfig, config: &Config) -> Result<Catalog> {
        let pg_catalog = PgCatalog::new().map_err(Error::Query)?;
        let lake = match check_local_lake(lake_root) {
            Ok(()) => Some(Lake::open(lake_root).await?),
            Err(error) => {
                warn!(
                    lake = lake_root,
                    reason = %error,
                    "no lake yet: serving an empty catalog until the processor creates it"
                );
                None
            }
        };
        let state = build_state(lake.as_ref(), lifecycle, &pg_catalog).await?;
        debug!(lake = lake_root, "lake opened for queries");
        Ok(Catalog {
            lake: tokio::sync::Mutex::new(lake),
            root: lake_root.to_owned(),
            pg_catalog,
            current: RwLock::new(Snapshot {
                state: Arc::new(state),
                taken: Instant::now(),
            }),
            memory_limit: config.memory_limit,
            refresh_interval: config.refresh_interval,
            lifecycle: lifecycle.clone(),
        })
    }

    /// Whether the lake's tables are in the catalog (false while the server waits
    /// for the processor to create them).
    pub async fn has_lake(&self) -> bool {
        self.lake.lock().await.is_some()
    }

    /// Loads the commits made since the last look and swaps in providers at the new
    /// versions (or opens the lake, if it has appeared since the last look).
    pub async fn refresh(&self) -> Result<()> {
        let mut lake = self.lake.lock().await;
        self.refresh_locked(&mut lake).await.map(drop)
    }

    async fn refresh_locked(&self, lake: &mut Option<Lake>) -> Result<Arc<SessionState>> {
        match lake {
            Some(lake) => lake.refresh().await?,
            None if check_local_lake(&self.root).is_ok() => {
                *lake = Some(Lake::open(&self.root).await?);
                info!(lake = %self.root, "the lake has appeared: its tables are served");
            }
            None => {}
        }
        let state = Arc::new(build_state(lake.as_ref(), &self.lifecycle, &self.pg_catalog).await?);
        if let Some(lake) = lake {
            let versions: Vec<_> = TableKind::ALL
                .iter()
                .map(|kind| (kind.name(), lake.version(*kind).ok()))
                .collect();
            debug!(?versions, "lake refreshed");
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Snapshot {
            state: state.clone(),
            taken: Instant::now(),
        };
        Ok(state)
    }

    /// The current session state, refreshed first if it is older than
    /// `refresh_interval`.
    async fn state(&self) -> Result<Arc<SessionState>> {
        let snapshot = self.snapshot();
        if snapshot.taken.elapsed() < self.refresh_interval {
            return Ok(snapshot.state);
        }
        // Concurrent queries wait for one refresh instead of each doing their own.
        let mut lake = self.lake.lock().await;
        let snapshot = self.snapshot();
        if snapshot.taken.elapsed() < self.refresh_interval {
            return Ok(snapshot.state);
        }
        self.refresh_locked(&mut lake).await
    }

    fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The table functions queries can call (the guard's allow-list, nothing more).
    pub fn table_functions(&self) -> Vec<String> {
        self.snapshot()
            .state
            .table_functions()
            .keys()
            .cloned()
            .collect()
    }

    /// The memory one query may use.
    pub fn memory_limit(&self) -> ByteSize {
        self.memory_limit
    }

    /// Plans one statement that [`guard::parse`] accepted, in a session with its own
    /// memory pool, and checks the plan against the read-only rules again.
    pub async fn plan(&self, statement: DfStatement) -> Result<Planned> {
        let state = self.state().await?;
        let context = self.query_context(&state)?;
        let plan = context
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| self.error(e))?;
        guard::check_plan(&plan)?;
        Ok(Planned { context, plan })
    }

    /// Parses, checks and plans `sql`, which may hold several statements. Session
    /// commands (`BEGIN`, `SET application_name …`) change nothing here and are
    /// left out.
    pub async fn plan_sql(&self, sql: &str) -> Result<Vec<Planned>> {
        let mut planned = Vec::new();
        for checked in guard::parse(sql)? {
            if let guard::Checked::Sql(statement) = checked {
                planned.push(self.plan(statement).await?);
            }
        }
        Ok(planned)
    }

    /// Runs a planned statement; its batches arrive as they are computed. Errors in
    /// the stream go through [`Catalog::error`].
    pub async fn execute(&self, planned: Planned) -> Result<SendableRecordBatchStream> {
        let Planned { context, plan } = planned;
        // Checked again here: `with_params` made a new plan.
        guard::check_plan(&plan)?;
        let frame = context
            .execute_logical_plan(plan)
            .await
            .map_err(|e| self.error(e))?;
        frame.execute_stream().await.map_err(|e| self.error(e))
    }

    /// Classifies an error from planning or running a query.
    pub fn error(&self, error: DataFusionError) -> Error {
        Error::from_query(error, self.memory_limit)
    }

    fn query_context(&self, state: &SessionState) -> Result<SessionContext> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.memory_limit.0),
            std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            // The lake's object stores (registered when the tables were) are shared.
            .with_object_store_registry(state.runtime_env().object_store_registry.clone())
            .build_arc()
            .map_err(Error::Query)?;
        let state = SessionStateBuilder::new_from_existing(state.clone())
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }
}

/// The session every query starts from: the lake's tables (Delta providers and the
/// delta-rs planner) when there is a lake, `information_schema` and `pg_catalog` on,
/// only the allowed table functions.
async fn build_state(
    lake: Option<&Lake>,
    lifecycle: &LifecycleConfig,
    pg_catalog: &PgCatalog,
) -> Result<SessionState> {
    let context = match lake {
        Some(lake) => {
            let context = lake.session_context().await?;
            // Sealed addresses are for the mailing path only (`spur segments`,
            // export), not for analysts: the table is not in their catalog at all.
            context
                .deregister_table(TableKind::Contacts.name())
                .map_err(Error::Query)?;
            spur_audience::views::register_views(&context, lifecycle)
                .await
                .map_err(|e| Error::Config(format!("lifecycle: {e}")))?;
            context
        }
        None => SessionContext::new(),
    };
    let mut state = pg_catalog.install(context).map_err(Error::Query)?;
    state.config_mut().options_mut().catalog.information_schema = true;
    let names: Vec<String> = state.table_functions().keys().cloned().collect();
    for name in names {
        if !guard::TABLE_FUNCTIONS.contains(&name.as_str()) {
            state.deregister_udtf(&name).map_err(Error::Query)?;
        }
    }
    Ok(state)
}

/// A local lake root (a path or `file://` URL) must hold the `events` table's Delta
/// log; `Lake::open` would otherwise create empty tables, and an analyst with a typo in
/// the path would see an empty lake instead of an error. Object-store roots are
/// not checked here.
fn check_local_lake(root: &str) -> Result<()> {
    let path = match root.strip_prefix("file://") {
        Some(path) => path,
        None if root.contains("://") => return Ok(()),
        None => root,
    };
    // The processor creates `events` first; tables added by later versions (or
    // written only by the query layer) are created by `Lake::open` when missing.
    let log = Path::new(path)
        .join(TableKind::Events.name())
        .join("_delta_log");
    if !log.is_dir() {
        return Err(Error::Config(format!(
            "no lake table at {}: lake.root must be the processor's lake root",
            log.parent().unwrap_or(&log).display()
        )));
    }
    Ok(())
}
