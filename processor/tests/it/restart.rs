//! A processor stopped and started again mid-stream, and a replay from offset 0 into
//! an empty lake: the same rows, the same session ids, nothing lost or doubled.

use crate::common::*;

async fn sessions_by_event(lake: &str) -> Vec<(String, String)> {
    rows(
        lake,
        "SELECT event_id, session_id FROM events ORDER BY event_id",
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r["event_id"].as_str().unwrap_or_default().to_owned(),
            r["session_id"].as_str().unwrap_or_default().to_owned(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_replay_give_the_same_lake() {
    let env = Env::new();
    let all = history(5, 8);
    let (first, second) = all.split_at(all.len() / 2);
    env.produce(first).await;
    env.process_until(env.config("lake", "g1"), first.len())
        .await;
    env.produce(second).await;
    // A second run of the same group resumes from the lake.
    env.process_until(env.config("lake", "g1"), all.len()).await;
    let lake = env.config("lake", "g1").lake;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM events").await,
        all.len() as i64
    );
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT event_id) FROM events").await,
        all.len() as i64
    );

    // Replay everything from offset 0 into an empty lake with a new group.
    env.process_until(env.config("replay", "g2"), all.len())
        .await;
    let replay = env.config("replay", "g2").lake;
    assert_eq!(
        sessions_by_event(&lake).await,
        sessions_by_event(&replay).await,
        "same session ids"
    );
    let sessions = "SELECT session_id, start_time, end_time, events, pageviews, pageview_dwell \
                    FROM sessions ORDER BY session_id";
    assert_eq!(
        rows(&lake, sessions).await,
        rows(&replay, sessions).await,
        "same closed sessions, same dwell times"
    );
    // The first halves closed (across the restart) with the dwell of each pageview:
    // a minute to the next one, the last unknown.
    let dwell = "SELECT dwell_source, dwell_ms, count(*) AS n FROM pageviews \
                 GROUP BY dwell_source, dwell_ms ORDER BY dwell_source NULLS LAST";
    let closed = 5 * 4;
    assert_eq!(
        rows(&lake, dwell).await,
        [
            serde_json::json!({"dwell_source": "next_pageview", "dwell_ms": 60_000, "n": closed - 5}),
            serde_json::json!({"n": all.len() - closed + 5}),
        ]
    );
}
