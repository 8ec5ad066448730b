//! Read-only enforcement for analyst SQL, in one place. Every statement the CLI or
//! the PostgreSQL-wire server runs goes through [`parse`] (which checks the syntax
//! tree) and then [`check_plan`] (which checks DataFusion's logical plan): a
//! statement has to pass both, so a gap in one is caught by the other.
//!
//! Allowed: queries (`SELECT`, `WITH`, `VALUES`, `TABLE`), `EXPLAIN [ANALYZE]` of a
//! query, `SHOW TABLES`, `SHOW COLUMNS`, `SHOW <setting>` and `DESCRIBE`. Refused:
//! everything else — DDL, DML (`INSERT`/`UPDATE`/`DELETE`/`MERGE`, also inside a
//! `WITH`), `COPY`, `CREATE EXTERNAL TABLE`, `SET`/`RESET`, transactions,
//! `SELECT … INTO`, file paths used as tables, and table functions other than
//! [`TABLE_FUNCTIONS`] (none of which reads files). The syntax tree that is checked
//! is the one that is planned: the SQL text is parsed once.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

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

/// Parses `sql` (PostgreSQL dialect, one or more statements separated by `;`) and
/// checks every statement. Refuses the whole text if any statement is refused, so
/// that nothing in a batch runs before a forbidden statement is found.
pub fn parse(sql: &str) -> crate::Result<Vec<DfStatement>> {
    let dialect = PostgreSqlDialect {};
    let statements = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(crate::Error::Query)?;
    if statements.is_empty() {
        return Err(crate::Error::Query(DataFusionError::Plan(
            "no SQL statement given".into(),
        )));
    }
    for statement in &statements {
        check(statement)?;
    }
    Ok(statements.into_iter().collect())
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
            if TABLE_FUNCTIONS.contains(&function.as_str()) && name.0.len() == 1 {
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
        assert_eq!(refused("SET datafusion.execution.batch_size = 1"), "SET");
        assert_eq!(refused("RESET datafusion.execution.batch_size"), "RESET");
        assert_eq!(refused("BEGIN"), "BEGIN");
        assert_eq!(
            refused("EXPLAIN ANALYZE INSERT INTO events VALUES (1)"),
            "INSERT"
        );
        assert_eq!(refused("EXPLAIN COPY events TO '/tmp/x.csv'"), "COPY");
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
