// node-postgres (`pg`, the driver of Node.js tools and dashboards) against
// `spur serve-sql`: a transaction, parameters (the extended protocol), a named
// prepared statement, session commands. Prints one JSON report; the Rust test
// (`clients.rs`) checks it.
//
// usage: node node_pg_client.js <port> <user> <password> <forbidden statements as JSON>
const { Client } = require("pg");

async function main() {
  const [port, user, password, forbiddenJson] = process.argv.slice(2);
  const forbidden = JSON.parse(forbiddenJson);
  const client = new Client({ host: "127.0.0.1", port: Number(port), user, password, database: "spur" });
  await client.connect();
  const report = {};
  await client.query("BEGIN");
  const count = await client.query(
    "SELECT count(*) AS n FROM events WHERE event_type = $1 AND dt >= $2",
    ["identify", "2025-01-01"],
  );
  report.identify_count = Number(count.rows[0].n);
  await client.query("COMMIT");
  const prepared = { name: "engaged", text: "SELECT event_id FROM events WHERE engaged_ms > $1 ORDER BY event_id", values: [1500] };
  await client.query(prepared);
  const again = await client.query(prepared);
  report.prepared_ids = again.rows.map((r) => r.event_id);
  report.database = (await client.query("SELECT current_database() AS d")).rows[0].d;
  await client.query("SET application_name = 'dashboard'");
  report.application_name = (await client.query("SHOW application_name")).rows[0].application_name;
  report.refused = {};
  for (const sql of forbidden) {
    try {
      await client.query(sql);
      report.refused[sql] = "ran";
    } catch (error) {
      report.refused[sql] = `${error.code} ${error.message}`;
    }
  }
  await client.end();
  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
