//! The data-driven SQL cases: a query over the fixture lake and its exact result as
//! CSV (what `spur sql --format csv` prints). `sql.rs` runs them through the CLI
//! path, `wire.rs` through a PostgreSQL client, both against the same text.

use crate::fixture::{DAY0, DAY1};

pub struct Case {
    pub name: &'static str,
    pub sql: String,
    pub csv: &'static str,
}

fn case(name: &'static str, sql: impl Into<String>, csv: &'static str) -> Case {
    Case {
        name,
        sql: sql.into(),
        csv,
    }
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "events per day",
            "SELECT dt, count(*) AS n FROM events GROUP BY dt ORDER BY dt",
            "dt,n\n2025-11-29,6\n2025-11-30,4\n",
        ),
        case(
            "one partition, grouped",
            format!(
                "SELECT event_type, count(*) AS n FROM events WHERE dt = '{DAY0}' \
                 GROUP BY event_type ORDER BY event_type"
            ),
            "event_type,n\nidentify,2\npageview,4\n",
        ),
        case(
            "distinct visitors per site",
            "SELECT site_id, count(DISTINCT visitor_id) AS visitors FROM events \
             GROUP BY site_id ORDER BY site_id",
            "site_id,visitors\nblog,2\nshop,3\n",
        ),
        case(
            "rows with nulls and booleans",
            format!(
                "SELECT event_id, site_id, event_type, path, engaged_ms, consent_marketing \
                 FROM events WHERE dt = '{DAY1}' ORDER BY event_id"
            ),
            "event_id,site_id,event_type,path,engaged_ms,consent_marketing\n\
             ev-1-0,shop,pageview,/p/0,,true\n\
             ev-1-1,blog,pageview,/p/1,1000,false\n\
             ev-1-2,shop,identify,/p/2,,true\n\
             ev-1-3,blog,pageview,/p/3,3000,false\n",
        ),
        case(
            "timestamps",
            format!(
                "SELECT event_id, event_time FROM events WHERE dt = '{DAY0}' \
                 ORDER BY event_time LIMIT 2"
            ),
            "event_id,event_time\n\
             ev-0-0,2025-11-29T12:00:00Z\n\
             ev-0-1,2025-11-29T12:01:00Z\n",
        ),
        case(
            "dates",
            "SELECT CAST(dt AS DATE) AS day, count(*) AS n FROM sessions GROUP BY 1 ORDER BY 1",
            "day,n\n2025-11-29,3\n2025-11-30,2\n",
        ),
        case(
            "floats and a boolean key",
            "SELECT is_bot, avg(pageviews) AS avg_pageviews, sum(duration_ms) AS total_ms \
             FROM sessions GROUP BY is_bot ORDER BY is_bot",
            "is_bot,avg_pageviews,total_ms\n\
             false,2.6666666666666665,300000\n\
             true,3.0,240000\n",
        ),
        case(
            "join of both tables",
            "SELECT e.dt, count(*) AS events, count(DISTINCT s.session_id) AS sessions \
             FROM events e JOIN sessions s ON e.session_id = s.session_id \
             GROUP BY e.dt ORDER BY e.dt",
            "dt,events,sessions\n2025-11-29,6,3\n2025-11-30,4,2\n",
        ),
        case(
            "a CTE with a window",
            "WITH daily AS (SELECT dt, count(*) AS n FROM events GROUP BY dt) \
             SELECT dt, n, sum(n) OVER (ORDER BY dt) AS running FROM daily ORDER BY dt",
            "dt,n,running\n2025-11-29,6,6\n2025-11-30,4,10\n",
        ),
        case(
            "values",
            "VALUES (1, 'a'), (2, 'b')",
            "column1,column2\n1,a\n2,b\n",
        ),
        case(
            "an empty result keeps its header",
            "SELECT event_id FROM events WHERE dt = '1999-01-01'",
            "event_id\n",
        ),
    ]
}
