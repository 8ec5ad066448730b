//! What PostgreSQL clients read besides the lake: the system catalog `pg_catalog`
//! (`pg_class`, `pg_namespace`, `pg_attribute`, `pg_type`, `pg_database`,
//! `pg_settings`, `pg_proc`, …), the functions tools call (`current_database()`,
//! `format_type`, `pg_table_is_visible`, `obj_description`, …) and the rewrites
//! that make their catalog queries (psql's `\d`, SQLAlchemy's inspector, BI tools)
//! plannable by DataFusion.
//!
//! The tables, functions and rewrites are `datafusion-pg-catalog`'s (the
//! `datafusion-postgres` project; ARCHITECTURE.md says why the crate and not its
//! server). This file decides what of it is installed and adds what Spur answers
//! itself: the database name (`spur`), `version()` in the form drivers parse,
//! `current_setting()`, and the comment functions (no object has a comment).
//!
//! One [`PgCatalog`] lives as long as the [`Catalog`](crate::Catalog): its
//! `pg_catalog` schema survives refreshes, so a table keeps its oid (psql asks for a
//! table's oid, then for its columns by that oid, in separate queries).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, Statement, TableFactor, Value, Visit, Visitor, visit_expressions,
    visit_expressions_mut, visit_relations,
};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

/// The one database clients see (`current_database()`, `\l`, the catalog name).
pub const DATABASE: &str = "spur";

/// The version clients are told, as PostgreSQL writes it: drivers parse the leading
/// `PostgreSQL <major>.<minor>` (SQLAlchemy refuses a server whose `version()` does
/// not start so) and pick the catalog queries of that release.
pub const SERVER_VERSION: &str = "16.6";

/// Session settings a client may `SET`, `RESET` and `SHOW`, with the server's value:
/// drivers set them by habit, and none changes what a query reads or may do (values
/// are always sent in ISO format and timestamps in UTC, whatever `DateStyle` and
/// `TimeZone` say). Names are lowercase; PostgreSQL's are case-insensitive.
pub const SESSION_SETTINGS: [(&str, &str); 22] = [
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
    ("is_superuser", "off"),
];

/// The server's value of a session setting (case-insensitive name), if it is one.
pub fn setting_default(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    SESSION_SETTINGS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, value)| *value)
}

/// The text of `version()`.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Spur {} on Apache DataFusion), read-only",
        env!("CARGO_PKG_VERSION")
    )
}

/// `pg_catalog` and the PostgreSQL functions, installed into each session state the
/// catalog builds.
#[derive(Debug)]
pub(crate) struct PgCatalog {
    current: CurrentCatalogs,
    schema: Arc<PgCatalogSchemaProvider<CurrentCatalogs, EmptyContextProvider>>,
    to_regtype: ToRegtype,
}

impl PgCatalog {
    pub(crate) fn new() -> Result<PgCatalog> {
        let current = CurrentCatalogs::default();
        let static_tables = Arc::new(PgCatalogStaticTables::try_new()?);
        let to_regtype = ToRegtype::new(&static_tables)?;
        let schema = Arc::new(PgCatalogSchemaProvider::try_new(
            current.clone(),
            static_tables,
            EmptyContextProvider,
        )?);
        Ok(PgCatalog {
            current,
            schema,
            to_regtype,
        })
    }

    /// Turns the lake's session into what clients see: its tables and views in
    /// database [`DATABASE`], schema `public`, beside `pg_catalog`, with the
    /// PostgreSQL functions and type names (`regclass`, `oid`, …).
    pub(crate) fn install(&self, context: SessionContext) -> Result<SessionState> {
        let state = context.state();
        let default = state.config().options().catalog.default_catalog.clone();
        let lake = state.catalog_list().catalog(&default).ok_or_else(|| {
            DataFusionError::Internal(format!("the lake's session has no catalog {default}"))
        })?;
        lake.register_schema("pg_catalog", self.schema.clone())?;
        let catalogs: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(DATABASE.into(), lake);

        let mut config = state
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false);
        config.options_mut().catalog.default_catalog = DATABASE.into();
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .with_catalog_list(catalogs.clone())
            .with_type_planner(Arc::new(PgOidTypePlanner))
            .build();
        let context = SessionContext::new_with_state(state);
        for function in functions() {
            context.register_udf(function);
        }
        context.register_udf(ScalarUDF::new_from_impl(self.to_regtype.clone()));
        // `generate_series(1, array_upper(…))`: int4 arguments widened to int8.
        CoerceIntArgsToBigInt::widen(&context);
        self.current.set(catalogs);
        Ok(context.state())
    }
}

/// The functions clients call, PostgreSQL's names and results.
fn functions() -> Vec<ScalarUDF> {
    let mut functions = vec![
        pg::create_current_database_udf(DATABASE),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_session_user_udf(),
        pg::create_pg_get_userbyid_udf(),
        pg::create_pg_table_is_visible(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        format_type::create_format_type_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
    ];
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
    ] {
        functions.push(has_privilege_udf::create_has_privilege_udf(name));
    }
    let no_text = ScalarValue::Utf8(None);
    for (name, arguments, value) in [
        // No object in the lake carries a comment: NULL, as PostgreSQL answers for
        // an object without.
        ("obj_description", &[1, 2][..], no_text.clone()),
        ("col_description", &[2], no_text.clone()),
        ("shobj_description", &[2], no_text.clone()),
        // No column is backed by a sequence.
        ("pg_get_serial_sequence", &[2], no_text),
        // Everything in pg_catalog is on the search path.
        (
            "pg_collation_is_visible",
            &[1],
            ScalarValue::Boolean(Some(true)),
        ),
        // What drivers parse, instead of DataFusion's own text.
        ("version", &[0], ScalarValue::Utf8(Some(version_text()))),
    ] {
        functions.push(ScalarUDF::new_from_impl(Constant::new(
            name, arguments, value,
        )));
    }
    functions.push(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    functions.push(ScalarUDF::new_from_impl(CurrentSetting::new()));
    functions
}

/// Rewrites the queries of `sql` the way `datafusion-pg-catalog` does for client
/// catalog queries (unqualified `pg_class` → `pg_catalog.pg_class`, `'x'::regclass`
/// → a subquery, `OPERATOR(pg_catalog.~)` → `~`, `COLLATE` dropped, and whole
/// queries DataFusion cannot plan replaced by equivalent ones). `None` when the
/// text does not parse that way; the caller checks every statement it uses, and
/// uses a rewritten query only where [`is_catalog_query`] holds for it.
pub(crate) fn rewritten(sql: &str) -> Option<Vec<Statement>> {
    static PARSER: LazyLock<PostgresCompatibilityParser> =
        LazyLock::new(PostgresCompatibilityParser::new);
    let mut statements = PARSER.parse(sql).ok()?;
    for statement in &mut statements {
        if is_catalog_query(statement) {
            null_nested_correlated_subqueries(statement);
        }
    }
    Some(statements)
}

/// Whether a query reads only the system catalog (`pg_*` relations, schemas
/// `pg_catalog` and `information_schema`) or no relation at all. Only such queries
/// are planned as rewritten: the rewrites replace subqueries they cannot plan by
/// NULL, which is right for a tool's catalog query over a lake without defaults,
/// sequences or collations, and would silently change an analyst's answer.
pub(crate) fn is_catalog_query(statement: &Statement) -> bool {
    let mut catalog_only = true;
    let _ = visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| part.to_string().trim_matches('"').to_lowercase())
            .collect();
        let catalog = match &parts[..] {
            [table] => table.starts_with("pg_"),
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [] => false,
        };
        catalog_only &= catalog;
        ControlFlow::<()>::Continue(())
    });
    catalog_only
}

/// Replaces correlated scalar subqueries inside projected expressions (SQLAlchemy's
/// `CASE WHEN … THEN (SELECT … WHERE inner.x = outer.y)`) by NULL: DataFusion
/// cannot plan a correlated subquery that is not aggregated, and what they look up
/// (column defaults, identity options, collations) does not exist in the lake.
/// `datafusion-pg-catalog` does the same for subqueries that are a whole projected
/// item.
fn null_nested_correlated_subqueries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Case { .. } | Expr::BinaryOp { .. } | Expr::Nested(_) = expr {
            let _ = visit_expressions_mut(expr, |inner| {
                if let Expr::Subquery(query) = inner
                    && is_correlated(query)
                {
                    *inner = Expr::Value(Value::Null.with_empty_span());
                }
                ControlFlow::<()>::Continue(())
            });
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Whether `query` names a column of a relation outside its own `FROM` (by the
/// relation's name or alias).
fn is_correlated(query: &Query) -> bool {
    let mut own = HashSet::new();
    let _ = visit_relations(query, |name| {
        if let Some(last) = name.0.last() {
            own.insert(last.to_string().trim_matches('"').to_lowercase());
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = query.visit(&mut Aliases(&mut own));
    let mut correlated = false;
    let _ = visit_expressions(query, |expr| {
        if let Expr::CompoundIdentifier(parts) = expr
            && parts.len() >= 2
        {
            let relation = parts[parts.len() - 2].value.to_lowercase();
            correlated |= !own.contains(&relation);
        }
        ControlFlow::<()>::Continue(())
    });
    correlated
}

/// Collects the aliases of the relations a query reads.
struct Aliases<'a>(&'a mut HashSet<String>);

impl Visitor for Aliases<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            alias: Some(alias), ..
        } = factor
        {
            self.0.insert(alias.name.value.to_lowercase());
        }
        ControlFlow::Continue(())
    }
}

/// The catalog list queries see now: `pg_catalog`'s tables list its tables. Names
/// come sorted, so new tables get the same oids whichever order a map yields them.
#[derive(Debug, Clone, Default)]
struct CurrentCatalogs(Arc<RwLock<Option<Arc<dyn CatalogProviderList>>>>);

impl CurrentCatalogs {
    fn set(&self, catalogs: Arc<dyn CatalogProviderList>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(catalogs);
    }

    fn get(&self) -> Option<Arc<dyn CatalogProviderList>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[async_trait]
impl CatalogInfo for CurrentCatalogs {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(self
            .get()
            .map(|list| sorted(CatalogProviderList::catalog_names(list.as_ref())))
            .unwrap_or_default())
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .get()
            .and_then(|list| list.catalog(catalog))
            .map(|c| sorted(c.schema_names())))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .get()
            .and_then(|list| list.catalog(catalog))
            .and_then(|c| c.schema(schema))
            .map(|s| sorted(s.table_names())))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        match self.get() {
            Some(list) => CatalogInfo::table_schema(&list, catalog, schema, table).await,
            None => Ok(None),
        }
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        match self.get() {
            Some(list) => CatalogInfo::table_type(&list, catalog, schema, table).await,
            None => Ok(None),
        }
    }
}

/// A function with one answer whatever its arguments (`version()`, the comment
/// functions, …).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl Constant {
    fn new(name: &'static str, arguments: &[usize], value: ScalarValue) -> Constant {
        let signatures = arguments
            .iter()
            .map(|n| match n {
                0 => TypeSignature::Nullary,
                n => TypeSignature::Any(*n),
            })
            .collect();
        Constant {
            name,
            signature: Signature::one_of(signatures, Volatility::Stable),
            value,
        }
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `current_setting(name)`: the server's value of a session setting
/// ([`SESSION_SETTINGS`]); a client's own
/// `SET` is answered by `SHOW`, not here.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> CurrentSetting {
        CurrentSetting {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let missing_ok = match args.args.get(1) {
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(flag)))) => *flag,
            _ => false,
        };
        let names = args.args[0].to_array(args.number_rows)?;
        let names = names
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("current_setting: not a string".into()))?;
        let mut values = Vec::with_capacity(names.len());
        for name in names.iter() {
            values.push(match name {
                None => None,
                Some(name) => match setting_default(name) {
                    Some(value) => Some(value.to_owned()),
                    None if missing_ok => None,
                    None => {
                        return Err(DataFusionError::Plan(format!(
                            "unrecognized configuration parameter \"{name}\""
                        )));
                    }
                },
            });
        }
        let array: ArrayRef = Arc::new(StringArray::from(values));
        Ok(ColumnarValue::Array(array))
    }
}

/// `to_regtype(name)`: the oid of a type in `pg_type` by name (`int4`, `integer`,
/// `pg_catalog.text`), NULL for a type that does not exist. Drivers ask it for
/// extension types before they use them (psycopg's `TypeInfo.fetch("hstore")`,
/// which SQLAlchemy runs on connect).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ToRegtype {
    /// `(typname, oid)`, sorted by name.
    oids: Vec<(String, i32)>,
    signature: Signature,
}

/// SQL's names of types whose `pg_type` name differs.
const TYPE_ALIASES: [(&str, &str); 12] = [
    ("integer", "int4"),
    ("int", "int4"),
    ("smallint", "int2"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("double precision", "float8"),
    ("boolean", "bool"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("decimal", "numeric"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
];

impl ToRegtype {
    fn new(tables: &PgCatalogStaticTables) -> Result<ToRegtype> {
        use datafusion::arrow::compute::cast;
        let mut oids = Vec::new();
        for batch in tables.pg_type.data() {
            let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
                let array = batch.column_by_name(name).ok_or_else(|| {
                    DataFusionError::Internal(format!("pg_type has no column {name}"))
                })?;
                Ok(cast(array, to)?)
            };
            let names = column("typname", &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("pg_type.typname is not text".into()))?;
            let ids = column("oid", &DataType::Int32)?;
            let ids = ids
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int32Array>()
                .ok_or_else(|| DataFusionError::Internal("pg_type.oid is not int4".into()))?;
            for (name, oid) in names.iter().zip(ids.iter()) {
                if let (Some(name), Some(oid)) = (name, oid) {
                    oids.push((name.to_owned(), oid));
                }
            }
        }
        oids.sort();
        Ok(ToRegtype {
            oids,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        })
    }

    fn oid(&self, name: &str) -> Option<i32> {
        let name = name.trim().to_lowercase();
        let name = name
            .strip_prefix("pg_catalog.")
            .unwrap_or(&name)
            .trim_matches('"');
        let name = TYPE_ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, typname)| typname);
        self.oids
            .binary_search_by(|(known, _)| known.as_str().cmp(name))
            .ok()
            .map(|index| self.oids[index].1)
    }
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let names = args.args[0].to_array(args.number_rows)?;
        let names = names
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("to_regtype: not a string".into()))?;
        let oids: datafusion::arrow::array::Int32Array = names
            .iter()
            .map(|name| name.and_then(|n| self.oid(n)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(oids)))
    }
}

/// `json_build_object(key, value, …)`: a JSON object as text (SQLAlchemy's column
/// inspection builds identity and collation details with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> JsonBuildObject {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes an even number of arguments (keys and values)".into(),
            ));
        }
        let arrays = args
            .args
            .iter()
            .map(|arg| arg.to_array(args.number_rows))
            .collect::<Result<Vec<_>>>()?;
        let mut objects = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = match json(ScalarValue::try_from_array(&pair[0], row)?) {
                    serde_json::Value::Null => {
                        return Err(DataFusionError::Plan(
                            "json_build_object: a key is NULL".into(),
                        ));
                    }
                    serde_json::Value::String(key) => key,
                    other => other.to_string(),
                };
                object.insert(key, json(ScalarValue::try_from_array(&pair[1], row)?));
            }
            objects.push(Some(serde_json::Value::Object(object).to_string()));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(objects))))
    }
}

/// One value as JSON: numbers and booleans as such, NULL as null, the rest as text.
fn json(value: ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(b),
        ScalarValue::Int8(Some(n)) => n.into(),
        ScalarValue::Int16(Some(n)) => n.into(),
        ScalarValue::Int32(Some(n)) => n.into(),
        ScalarValue::Int64(Some(n)) => n.into(),
        ScalarValue::UInt8(Some(n)) => n.into(),
        ScalarValue::UInt16(Some(n)) => n.into(),
        ScalarValue::UInt32(Some(n)) => n.into(),
        ScalarValue::UInt64(Some(n)) => n.into(),
        ScalarValue::Float32(Some(n)) => {
            serde_json::Number::from_f64(n.into()).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Float64(Some(n)) => {
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_regtype_finds_types_by_any_of_their_names() -> Result<()> {
        let tables = PgCatalogStaticTables::try_new()?;
        let to_regtype = ToRegtype::new(&tables)?;
        assert_eq!(to_regtype.oid("int4"), Some(23));
        assert_eq!(to_regtype.oid("integer"), Some(23));
        assert_eq!(to_regtype.oid("pg_catalog.text"), Some(25));
        assert_eq!(to_regtype.oid("Timestamp With Time Zone"), Some(1184));
        assert_eq!(to_regtype.oid("hstore"), None);
        Ok(())
    }

    #[tokio::test]
    async fn json_build_object_writes_typed_values() -> Result<()> {
        let context = SessionContext::new();
        context.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
        let batches = context
            .sql("SELECT json_build_object('a', 1, 'b', 'x\"y', 'c', true, 'd', NULL) AS j")
            .await?
            .collect()
            .await?;
        let column = batches[0].column(0);
        let text = column
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(0).to_owned());
        assert_eq!(
            text.as_deref(),
            Some(r#"{"a":1,"b":"x\"y","c":true,"d":null}"#)
        );
        Ok(())
    }
}
