//! Read-only enforcement for analyst SQL, in one place. Every statement the CLI or
//! the PostgreSQL-wire server runs goes through [`parse`] (which checks the syntax
//! tree) and then [`check_plan`] (which checks DataFusion's logical plan): a
//! statement has to pass both, so a gap in one is caught by the other.
//!
//! Allowed: queries (`SELECT`, `WITH`, `VALUES`, `TABLE`), `EXPLAIN [ANALYZE]` of a
//! query, `SHOW TABLES`, `SHOW COLUMNS`, `SHOW <setting>` and `DESCRIBE`. Refused:
//! everything else — DDL, DML (`INSERT`/`UPDATE`/`DELETE`/`MERGE`, also inside a
//! `WITH`), `COPY`, `CREATE EXTERNAL TABLE`, `SET`/`RESET` of DataFusion's
//! settings, `SELECT … INTO`, file paths used as tables, and table functions other
//! than [`TABLE_FUNCTIONS`] (none of which reads files). The syntax tree that is
//! checked is the one that is planned: the SQL text is parsed once, and where the
//! PostgreSQL compatibility rewrites (`crate::postgres`) change a query, the
//! rewritten tree is checked and planned.
//!
//! Drivers send session commands that change nothing on a read-only server; they
//! are [`Session`] commands, answered by the SQL server without planning anything:
//! transactions (`BEGIN`, `START TRANSACTION [READ ONLY]`, `COMMIT`, `ROLLBACK`,
//! savepoints — there is nothing to commit), `SET`/`RESET`/`SHOW` of the settings
//! in [`SESSION_SETTINGS`](crate::postgres::SESSION_SETTINGS) (formats and timeouts
//! clients set by habit), `DISCARD ALL` and `DEALLOCATE` (psycopg's after a
//! rollback). `READ WRITE` transactions, `SET ROLE`, `SET SESSION AUTHORIZATION` and
//! any other setting are refused.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::ResetStatement;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr, ObjectName, Query, Set, SetExpr, Statement, TableFactor,
    TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::postgres::setting_default;

/// The table functions analysts may call: both generate numbers, neither reads
/// anything. The catalog registers no other (it removes any a default adds).
pub const TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Most nesting the parser accepts (DataFusion's default), so that a deeply nested
/// expression is an error rather than a stack overflow.
const RECURSION_LIMIT: usize = 50;

/// A statement the read-only rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is not allowed: analyst SQL is read-only (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE)"
)]
pub struct Refusal {
    /// What was refused, e.g. `INSERT` or `table function read_parquet`.
    pub what: String,
}

fn refuse<T>(what: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal { what: what.into() })
}

/// DataFusion's own switch for the same rules, applied to every plan by
/// [`check_plan`].
pub fn sql_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Settings a client may `SHOW` but not change: changing them would claim what the
/// server does not do.
const FIXED_SETTINGS: [&str; 7] = [
    "integer_datetimes",
    "max_identifier_length",
    "server_encoding",
    "server_version",
    "transaction_read_only",
    "default_transaction_read_only",
    "is_superuser",
];

/// One statement that passed the checks.
#[derive(Debug, Clone)]
pub enum Checked {
    /// A query, `EXPLAIN`, `SHOW` or `DESCRIBE`: planned and run.
    Sql(DfStatement),
    /// A session command: answered without planning, changes nothing.
    Session(Session),
}

/// A session command a read-only server accepts (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// `BEGIN`, `START TRANSACTION [READ ONLY]`: nothing to begin.
    Begin,
    /// `COMMIT`, `END`, `RELEASE SAVEPOINT`: nothing to commit.
    Commit,
    /// `ROLLBACK`, `ABORT`: nothing to undo.
    Rollback,
    /// `SAVEPOINT name`, `ROLLBACK TO SAVEPOINT name`.
    Savepoint,
    /// `SET TRANSACTION …` / `SET SESSION CHARACTERISTICS AS TRANSACTION …` with
    /// read-only modes or an isolation level.
    SetTransaction,
    /// `SET name = value` of one of [`SESSION_SETTINGS`](crate::postgres::SESSION_SETTINGS) (lowercase name).
    Set { name: String, value: String },
    /// `RESET name` (lowercase) or `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `SHOW name` of one of [`SESSION_SETTINGS`](crate::postgres::SESSION_SETTINGS) (lowercase name).
    Show(String),
    /// `DISCARD ALL`: settings back to the server's.
    DiscardAll,
    /// `DEALLOCATE name` (a prepared statement of the connection) or `DEALLOCATE
    /// ALL` (`None`).
    Deallocate(Option<String>),
}

/// Parses `sql` (PostgreSQL dialect, one or more statements separated by `;`) and
/// checks every statement. Refuses the whole text if any statement is refused, so
/// that nothing in a batch runs before a forbidden statement is found.
pub fn parse(sql: &str) -> crate::Result<Vec<Checked>> {
    let dialect = PostgreSqlDialect {};
    let parsed = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map(|statements| statements.into_iter().collect::<Vec<_>>());
    // Client catalog queries the DataFusion parser cannot read (psql's, pgcli's)
    // may read once rewritten; everything else keeps the first parser's error.
    let (statements, rewritten) = match parsed {
        Ok(statements) => {
            let rewritten = crate::postgres::rewritten(sql)
                .filter(|rewritten| rewritten.len() == statements.len());
            (statements, rewritten)
        }
        Err(error) => match crate::postgres::rewritten(sql) {
            Some(rewritten)
                if !rewritten.is_empty()
                    && rewritten.iter().all(|statement| {
                        !matches!(statement, Statement::Query(_))
                            || crate::postgres::is_catalog_query(statement)
                    }) =>
            {
                let statements = rewritten
                    .iter()
                    .map(|s| DfStatement::Statement(Box::new(s.clone())))
                    .collect();
                (statements, Some(rewritten))
            }
            _ => return Err(crate::Error::Query(error)),
        },
    };
    if statements.is_empty() {
        return Err(crate::Error::Query(DataFusionError::Plan(
            "no SQL statement given".into(),
        )));
    }
    let mut checked = Vec::with_capacity(statements.len());
    for (index, statement) in statements.into_iter().enumerate() {
        if let Some(session) = session(&statement)? {
            checked.push(Checked::Session(session));
            continue;
        }
        check(&statement)?;
        // A query is planned as rewritten for DataFusion (and checked again).
        let statement = match (&statement, rewritten.as_ref().map(|r| &r[index])) {
            (DfStatement::Statement(original), Some(rewritten @ Statement::Query(_)))
                if matches!(**original, Statement::Query(_))
                    && crate::postgres::is_catalog_query(rewritten) =>
            {
                let statement = DfStatement::Statement(Box::new(rewritten.clone()));
                check(&statement)?;
                statement
            }
            _ => statement,
        };
        checked.push(Checked::Sql(statement));
    }
    Ok(checked)
}

/// The session command `statement` is, `None` if it is none, or a refusal for a
/// session command the server does not accept.
fn session(statement: &DfStatement) -> Result<Option<Session>, Refusal> {
    let statement = match statement {
        DfStatement::Statement(statement) => statement.as_ref(),
        DfStatement::Reset(ResetStatement::Variable(name)) => {
            let name = name.to_string().to_lowercase();
            return Ok(if name == "all" {
                Some(Session::Reset(None))
            } else if setting_default(&name).is_some() && !FIXED_SETTINGS.contains(&name.as_str()) {
                Some(Session::Reset(Some(name)))
            } else {
                None
            });
        }
        _ => return Ok(None),
    };
    let read_write = |modes: &[TransactionMode]| {
        modes.contains(&TransactionMode::AccessMode(
            TransactionAccessMode::ReadWrite,
        ))
    };
    Ok(Some(match statement {
        Statement::StartTransaction { modes, .. } if read_write(modes) => {
            return refuse("a READ WRITE transaction");
        }
        Statement::StartTransaction { statements, .. } if !statements.is_empty() => {
            return refuse("a BEGIN … END block");
        }
        Statement::StartTransaction { .. } => Session::Begin,
        Statement::Commit { .. } | Statement::ReleaseSavepoint { .. } => Session::Commit,
        Statement::Rollback {
            savepoint: Some(_), ..
        }
        | Statement::Savepoint { .. } => Session::Savepoint,
        Statement::Rollback { .. } => Session::Rollback,
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Session::DiscardAll,
        Statement::Deallocate { name, .. } if name.value.eq_ignore_ascii_case("all") => {
            Session::Deallocate(None)
        }
        Statement::Deallocate { name, .. } => Session::Deallocate(Some(name.value.clone())),
        Statement::Set(Set::SetTransaction { modes, .. }) if read_write(modes) => {
            return refuse("a READ WRITE transaction");
        }
        Statement::Set(Set::SetTransaction { snapshot: None, .. }) => Session::SetTransaction,
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => return set(&variable.to_string(), values).map(Some),
        Statement::Set(Set::SetTimeZone { value, .. }) => {
            return set("timezone", std::slice::from_ref(value)).map(Some);
        }
        Statement::Set(Set::SetNames { charset_name, .. }) => {
            return set_value("client_encoding", charset_name.value.clone()).map(Some);
        }
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|part| part.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            match name.as_str() {
                "transaction isolation level" => Session::Show("transaction_isolation".into()),
                "time zone" => Session::Show("timezone".into()),
                _ if setting_default(&name).is_some() => Session::Show(name),
                // DataFusion's own settings (`SHOW datafusion.…`, `SHOW ALL`).
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    }))
}

/// `SET name = values`: allowed for [`SESSION_SETTINGS`](crate::postgres::SESSION_SETTINGS) that are not fixed.
fn set(name: &str, values: &[Expr]) -> Result<Session, Refusal> {
    let value = values
        .iter()
        .map(|value| value.to_string().trim_matches('\'').to_owned())
        .collect::<Vec<_>>()
        .join(", ");
    set_value(name, value)
}

fn set_value(name: &str, value: String) -> Result<Session, Refusal> {
    let name = name.trim_matches('"').to_lowercase();
    let name = if name == "time zone" {
        "timezone".into()
    } else {
        name
    };
    // Saying again that the session is read-only is fine; anything else would lie.
    let read_only = name.ends_with("transaction_read_only")
        && ["on", "true", "1", "yes"].contains(&value.to_lowercase().as_str());
    if setting_default(&name).is_none() || (FIXED_SETTINGS.contains(&name.as_str()) && !read_only) {
        return refuse(format!("SET {name}"));
    }
    Ok(Session::Set { name, value })
}

/// Checks one parsed statement against the read-only rules.
pub fn check(statement: &DfStatement) -> Result<(), Refusal> {
    match statement {
        DfStatement::Statement(statement) => check_statement(statement),
        DfStatement::Explain(explain) => check(&explain.statement),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => refuse("COPY"),
        DfStatement::Reset(_) => refuse("RESET"),
    }
}

/// Checks a logical plan with DataFusion's [`SQLOptions`]: no DDL, DML, `COPY` or
/// statement (`SET`, transactions) node anywhere in it, subqueries included.
pub fn check_plan(plan: &LogicalPlan) -> Result<(), Refusal> {
    sql_options().verify_plan(plan).or_else(|error| {
        let message = match error.find_root() {
            DataFusionError::Plan(message) => message.clone(),
            other => other.to_string(),
        };
        refuse(message)
    })
}

fn check_statement(statement: &Statement) -> Result<(), Refusal> {
    match statement {
        Statement::Query(query) => check_query(query),
        Statement::Explain { statement, .. } => check_statement(statement),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. } => Ok(()),
        other => refuse(label(other)),
    }
}

fn check_query(query: &Query) -> Result<(), Refusal> {
    match query.visit(&mut QueryCheck) {
        ControlFlow::Break(refusal) => Err(refusal),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Walks a query, its CTEs and every subquery.
struct QueryCheck;

impl Visitor for QueryCheck {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refusal> {
        as_flow(check_body(&query.body))
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Refusal> {
        as_flow(check_table_factor(factor))
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Refusal> {
        // A statement nested in a query (`WITH x AS (INSERT …)`) is never a query.
        as_flow(refuse(label(statement)))
    }
}

fn as_flow(result: Result<(), Refusal>) -> ControlFlow<Refusal> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(refusal) => ControlFlow::Break(refusal),
    }
}

fn check_body(body: &SetExpr) -> Result<(), Refusal> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => refuse("SELECT INTO"),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        SetExpr::Insert(_) => refuse("INSERT"),
        SetExpr::Update(_) => refuse("UPDATE"),
        SetExpr::Delete(_) => refuse("DELETE"),
        SetExpr::Merge(_) => refuse("MERGE"),
        // Nested queries are visited on their own.
        _ => Ok(()),
    }
}

fn check_table_factor(factor: &TableFactor) -> Result<(), Refusal> {
    match factor {
        TableFactor::Table {
            name,
            args: Some(_),
            ..
        } => {
            let function = last_part(name);
            // PostgreSQL's own name for them is `pg_catalog.<name>` (psql uses it).
            let qualified_ok = match &name.0[..] {
                [_] => true,
                [schema, _] => schema.to_string().trim_matches('"') == "pg_catalog",
                _ => false,
            };
            if TABLE_FUNCTIONS.contains(&function.as_str()) && qualified_ok {
                Ok(())
            } else {
                refuse(format!("table function {name}"))
            }
        }
        TableFactor::Table { name, .. } if looks_like_a_path(name) => {
            refuse(format!("reading the file {name}"))
        }
        TableFactor::Function { name, .. } => refuse(format!("table function {name}")),
        TableFactor::TableFunction { expr, .. } => refuse(format!("table function {expr}")),
        _ => Ok(()),
    }
}

fn last_part(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|part| part.to_string().trim_matches('"').to_lowercase())
        .unwrap_or_default()
}

/// A quoted file name or URL used as a table (`FROM 'data/x.parquet'`): DataFusion
/// reads such names as files when URL tables are enabled. They are not enabled;
/// this says so clearly instead of "table not found".
fn looks_like_a_path(name: &ObjectName) -> bool {
    const EXTENSIONS: [&str; 8] = [
        ".parquet", ".csv", ".json", ".ndjson", ".avro", ".arrow", ".tsv", ".gz",
    ];
    let text = name.to_string().to_lowercase();
    text.contains('/')
        || text.contains('\\')
        || text.contains("://")
        || EXTENSIONS
            .iter()
            .any(|ext| text.trim_end_matches(['"', '\'']).ends_with(ext))
}

/// A short name for a refused statement: its first keyword, or the first two for
/// `CREATE`/`DROP`/`ALTER` (`CREATE TABLE`, `DROP VIEW`).
fn label(statement: &Statement) -> String {
    const MODIFIERS: [&str; 10] = [
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNIQUE",
        "IF",
        "NOT",
        "EXISTS",
        "GLOBAL",
        "LOCAL",
    ];
    let text = statement.to_string();
    let mut words = text.split_whitespace().map(str::to_uppercase);
    let Some(first) = words.next() else {
        return "this statement".into();
    };
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => match words.find(|w| !MODIFIERS.contains(&w.as_str())) {
            Some(object) => format!("{first} {object}"),
            None => first,
        },
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match parse(sql) {
            Err(crate::Error::Refused(refusal)) => refusal.what,
            Err(other) => panic!("{sql}: not refused but failed: {other}"),
            Ok(_) => panic!("{sql}: allowed"),
        }
    }

    fn allowed(sql: &str) {
        if let Err(error) = parse(sql) {
            panic!("{sql}: {}", error.chain());
        }
    }

    #[test]
    fn queries_and_introspection_are_allowed() {
        for sql in [
            "SELECT 1",
            "select count(*) from events where dt = '2025-11-29'",
            "WITH s AS (SELECT * FROM sessions) SELECT count(*) FROM s",
            "VALUES (1, 'a'), (2, 'b')",
            "SELECT * FROM events e JOIN sessions s ON e.session_id = s.session_id",
            "SELECT * FROM (SELECT 1) AS t UNION ALL SELECT 2",
            "SELECT * FROM events WHERE session_id IN (SELECT session_id FROM sessions)",
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * FROM range(5)",
            "SELECT * FROM pg_catalog.generate_series(1, 3)",
            "EXPLAIN SELECT * FROM events",
            "EXPLAIN ANALYZE SELECT count(*) FROM events",
            "EXPLAIN VERBOSE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "SHOW datafusion.execution.batch_size",
            "DESCRIBE events",
            "SELECT 1; SELECT 2",
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn ddl_is_refused_with_its_name() {
        assert_eq!(refused("CREATE TABLE t (a INT)"), "CREATE TABLE");
        assert_eq!(
            refused("create or replace view v as select 1"),
            "CREATE VIEW"
        );
        assert_eq!(refused("DROP TABLE events"), "DROP TABLE");
        assert_eq!(refused("DROP VIEW IF EXISTS v"), "DROP VIEW");
        assert_eq!(
            refused("ALTER TABLE events ADD COLUMN x INT"),
            "ALTER TABLE"
        );
        assert_eq!(refused("CREATE SCHEMA s"), "CREATE SCHEMA");
        assert_eq!(refused("CREATE TABLE t AS SELECT 1"), "CREATE TABLE");
        assert_eq!(refused("TRUNCATE events"), "TRUNCATE");
        assert_eq!(
            refused("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'"),
            "CREATE EXTERNAL TABLE"
        );
    }

    #[test]
    fn dml_is_refused_with_its_name() {
        assert_eq!(refused("INSERT INTO events VALUES (1)"), "INSERT");
        assert_eq!(refused("UPDATE events SET site_id = 'x'"), "UPDATE");
        assert_eq!(refused("DELETE FROM events"), "DELETE");
        assert_eq!(
            refused("MERGE INTO events USING sessions ON true WHEN MATCHED THEN DELETE"),
            "MERGE"
        );
        assert_eq!(
            refused("WITH x AS (DELETE FROM events RETURNING *) SELECT * FROM x"),
            "DELETE"
        );
        assert_eq!(refused("SELECT * INTO copy FROM events"), "SELECT INTO");
    }

    #[test]
    fn copy_set_and_transactions_are_refused() {
        assert_eq!(refused("COPY events TO '/tmp/out.csv'"), "COPY");
        assert_eq!(
            refused("COPY (SELECT 1) TO '/tmp/out.parquet' STORED AS PARQUET"),
            "COPY"
        );
        assert_eq!(
            refused("SET datafusion.execution.batch_size = 1"),
            "SET datafusion.execution.batch_size"
        );
        assert_eq!(refused("RESET datafusion.execution.batch_size"), "RESET");
        assert_eq!(refused("SET ROLE admin"), "SET");
        assert_eq!(refused("SET SESSION AUTHORIZATION admin"), "SET");
        assert_eq!(
            refused("SET default_transaction_read_only = off"),
            "SET default_transaction_read_only"
        );
        assert_eq!(refused("BEGIN READ WRITE"), "a READ WRITE transaction");
        assert_eq!(
            refused("START TRANSACTION READ WRITE"),
            "a READ WRITE transaction"
        );
        assert_eq!(
            refused("SET TRANSACTION READ WRITE"),
            "a READ WRITE transaction"
        );
        assert_eq!(refused("DISCARD TEMP"), "DISCARD");
        assert_eq!(refused("PREPARE p AS DELETE FROM events"), "PREPARE");
        assert_eq!(
            refused("EXPLAIN ANALYZE INSERT INTO events VALUES (1)"),
            "INSERT"
        );
        assert_eq!(refused("EXPLAIN COPY events TO '/tmp/x.csv'"), "COPY");
    }

    fn sessions(sql: &str) -> Vec<Session> {
        match parse(sql) {
            Ok(checked) => checked
                .into_iter()
                .map(|c| match c {
                    Checked::Session(session) => session,
                    Checked::Sql(statement) => {
                        panic!("{sql}: {statement} is not a session command")
                    }
                })
                .collect(),
            Err(error) => panic!("{sql}: {}", error.chain()),
        }
    }

    #[test]
    fn driver_session_commands_are_no_ops() {
        use Session::*;
        assert_eq!(
            sessions("BEGIN; START TRANSACTION READ ONLY; BEGIN ISOLATION LEVEL REPEATABLE READ"),
            [Begin, Begin, Begin]
        );
        assert_eq!(
            sessions("COMMIT; END; ROLLBACK; ABORT"),
            [Commit, Commit, Rollback, Rollback]
        );
        assert_eq!(
            sessions("SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s"),
            [Savepoint, Savepoint, Commit]
        );
        assert_eq!(
            sessions(
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; \
                 SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
            ),
            [SetTransaction, SetTransaction]
        );
        let set = |name: &str, value: &str| Set {
            name: name.into(),
            value: value.into(),
        };
        assert_eq!(
            sessions(
                "SET application_name = 'DBeaver 24'; SET DateStyle TO ISO; \
                 SET extra_float_digits = 3; SET search_path = public, \"$user\"; \
                 SET statement_timeout = 0; SET TIME ZONE 'Europe/Berlin'; \
                 SET client_encoding = 'UTF8'; SET default_transaction_read_only = on"
            ),
            [
                set("application_name", "DBeaver 24"),
                set("datestyle", "ISO"),
                set("extra_float_digits", "3"),
                set("search_path", "public, \"$user\""),
                set("statement_timeout", "0"),
                set("timezone", "Europe/Berlin"),
                set("client_encoding", "UTF8"),
                set("default_transaction_read_only", "on"),
            ]
        );
        assert_eq!(
            sessions(
                "SHOW TRANSACTION ISOLATION LEVEL; SHOW standard_conforming_strings; SHOW TimeZone"
            ),
            [
                Show("transaction_isolation".into()),
                Show("standard_conforming_strings".into()),
                Show("timezone".into())
            ]
        );
        assert_eq!(
            sessions("RESET ALL; RESET application_name; DISCARD ALL"),
            [
                Reset(None),
                Reset(Some("application_name".into())),
                DiscardAll
            ]
        );
        assert_eq!(
            sessions("DEALLOCATE _pg3_0; DEALLOCATE ALL"),
            [Deallocate(Some("_pg3_0".into())), Deallocate(None)]
        );
        // DataFusion's settings stay readable as queries.
        assert!(matches!(
            parse("SHOW datafusion.execution.batch_size").expect("allowed")[..],
            [Checked::Sql(_)]
        ));
    }

    #[test]
    fn client_catalog_queries_are_rewritten_and_still_checked() {
        // psql's `\dt`: OPERATOR(pg_catalog.~) and COLLATE are rewritten away.
        let checked = parse(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             WHERE c.relname OPERATOR(pg_catalog.~) '^(events)$' COLLATE pg_catalog.default",
        )
        .expect("allowed");
        let [Checked::Sql(statement)] = &checked[..] else {
            panic!("{checked:?}");
        };
        let text = statement.to_string();
        assert!(!text.contains("OPERATOR"), "{text}");
        assert!(!text.contains("COLLATE"), "{text}");
        // A rewrite never turns a refused statement into an allowed one.
        assert_eq!(
            refused("SELECT * FROM pg_catalog.pg_class; DELETE FROM events"),
            "DELETE"
        );
    }

    #[test]
    fn files_and_unknown_table_functions_are_refused() {
        assert_eq!(
            refused("SELECT * FROM read_parquet('/etc/passwd')"),
            "table function read_parquet"
        );
        assert_eq!(
            refused("SELECT * FROM read_csv('data.csv')"),
            "table function read_csv"
        );
        assert_eq!(
            refused("SELECT * FROM events, LATERAL read_json('/x.json')"),
            "table function read_json"
        );
        assert_eq!(
            refused("SELECT * FROM \"/etc/passwd\""),
            "reading the file \"/etc/passwd\""
        );
        assert_eq!(
            refused("SELECT * FROM \"lake/events/x.parquet\""),
            "reading the file \"lake/events/x.parquet\""
        );
        assert_eq!(
            refused("SELECT (SELECT count(*) FROM read_parquet('x')) AS n"),
            "table function read_parquet"
        );
        assert_eq!(
            refused("SELECT * FROM other.generate_series(1, 2)"),
            "table function other.generate_series"
        );
    }

    #[test]
    fn one_forbidden_statement_refuses_the_whole_text() {
        assert_eq!(refused("SELECT 1; DROP TABLE events"), "DROP TABLE");
        assert_eq!(
            refused("SELECT 1; INSERT INTO events VALUES (1); SELECT 2"),
            "INSERT"
        );
        // A semicolon inside a string literal is not a statement boundary.
        allowed("SELECT 'a; DROP TABLE events'");
    }

    #[test]
    fn refusal_message_names_what_was_refused() {
        let error = parse("DROP TABLE events").expect_err("refused");
        assert_eq!(
            error.to_string(),
            "DROP TABLE is not allowed: analyst SQL is read-only \
             (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE)"
        );
    }

    #[test]
    fn empty_text_and_syntax_errors_are_query_errors() {
        assert!(matches!(parse(""), Err(crate::Error::Query(_))));
        assert!(matches!(parse("SELEC 1"), Err(crate::Error::Query(_))));
    }
}
