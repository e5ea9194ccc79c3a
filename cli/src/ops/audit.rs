//! `fota audit`: every operator action and automatic rollout decision (`/v1/audit`).

use super::client::Client;
use super::format::{utc, Table};
use super::ServerArgs;
use fota_server::api::admin::audit::AuditLog;
use serde_json::Value;
use std::io::Write;

/// `fota audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries about this rollout.
    #[arg(long, value_name = "ID")]
    pub rollout: Option<i64>,
    /// At most this many entries, newest first, 1-1000 [server default 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The fields of device counts by state, as the engine records them.
const COUNT_KEYS: [&str; 10] = [
    "eligible",
    "offered",
    "downloading",
    "installed",
    "confirmed",
    "failed",
    "rolled_back",
    "timed_out",
    "protection_blocked",
    "security_counter_blocked",
];

/// An entry's detail (a JSON object) as `key=value` pairs, compactly: nulls left out, nested
/// objects as `{k:v,...}`, and device counts by state without their zeros.
fn detail_text(detail: &Value) -> String {
    match detail {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => compact(other),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(compact).collect::<Vec<_>>().join(",")
        ),
        Value::Object(map) => {
            // Devices by state (`counts`, `stage_counts`): only the states that have any.
            let counts = !map.is_empty() && map.keys().all(|k| COUNT_KEYS.contains(&k.as_str()));
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| {
                    let zero_count = counts && v.as_f64() == Some(0.0);
                    !v.is_null() && !zero_count
                })
                .map(|(k, v)| format!("{k}:{}", compact(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        other => other.to_string(),
    }
}

/// Run `fota audit`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut query = Vec::new();
    if let Some(id) = args.rollout {
        query.push(("rollout_id", id.to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let value = client.get(&["v1", "audit"], &query)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let log: AuditLog = client.decode(value)?;
    if log.entries.is_empty() {
        writeln!(out, "no audit entries")?;
        return Ok(());
    }
    let mut table = Table::new(&["TIME", "ACTOR", "ACTION", "ROLLOUT", "DETAIL"]);
    for e in &log.entries {
        table.row(vec![
            utc(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.rollout_id.map_or_else(|| "-".into(), |r| r.to_string()),
            detail_text(&e.detail),
        ]);
    }
    table.write(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_as_pairs() {
        assert_eq!(
            detail_text(
                &serde_json::json!({"from_state":"active","stage":1,"x":[1,2],"gone":null})
            ),
            "from_state=active stage=1 x=[1,2]"
        );
        assert_eq!(
            detail_text(
                &serde_json::json!({"counts":{"confirmed":3,"failed":0},"selector":{"tags":["a"],"version_min":null}})
            ),
            "counts={confirmed:3} selector={tags:[a]}"
        );
        assert_eq!(
            detail_text(&serde_json::json!({"numbers":{"stage":1,"failures":2}})),
            "numbers={failures:2,stage:1}"
        );
        assert_eq!(detail_text(&Value::String("not json".into())), "not json");
    }
}
