//! `fota rollout start|status|list|watch|pause|resume|abort|approve` and `fota rollback`:
//! staged rollouts (`/v1/rollouts`) and fleet rollbacks (`/v1/rollbacks`).

use super::client::{Client, RequestError};
use super::format::{self, duration, number, rate, utc, Table};
use super::{parse_count, parse_duration, parse_percent, parse_rate, parse_seconds, ServerArgs};
use fota_server::api::admin::rollouts::{RolloutList, RolloutStatus, StageStatus};
use fota_server::domain::StateCounts;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal as _, Write};
use std::time::Duration;

/// `fota rollout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Rollout actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Start a staged rollout of a release.
    ///
    /// It targets the release's model's devices, or those the selector picks. Without plan flags
    /// the server's default plan applies: 1% -> 10% -> 50% -> 100%, bake 30m, minimum sample 20,
    /// at most 5% failures, confirmation deadline 2h, automatic advance. Plan flags apply to
    /// every stage. Prints the rollout's status, as `fota rollout status`.
    Start(Box<StartArgs>),
    /// A rollout's progress: per stage, devices by state; the failure rate against the limit;
    /// why it halted.
    Status(StatusArgs),
    /// List rollouts, newest first.
    List(ListArgs),
    /// Follow a rollout until it completes (exit 0), halts or is aborted (exit 1).
    ///
    /// Shows per stage: offered (every device offered so far), installed (booting it on trial),
    /// confirmed, failed (failed + rolled back + silent past the deadline), and the failure rate
    /// against the limit. On a terminal the view is redrawn in place; otherwise (a pipe, a log)
    /// one line per poll, without terminal codes.
    Watch(WatchArgs),
    /// Pause: no new offers until resumed; devices already updating carry on.
    Pause(ChangeArgs),
    /// Resume a paused or halted rollout; its gate is evaluated again at once.
    Resume(ChangeArgs),
    /// Abort for good: no more offers. Devices keep what they run (see `fota rollback`).
    Abort(ChangeArgs),
    /// Approve advancing past the current stage (for `--manual` stages).
    Approve(ChangeArgs),
}

/// The stage plan, as flags (`fota rollout start`, `fota rollback --staged`).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Plan")]
pub struct PlanArgs {
    /// Cumulative stage sizes in percent of the targets [default: 1,10,50,100].
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        value_parser = parse_percent,
        conflicts_with = "devices_stages"
    )]
    pub stages: Option<Vec<f64>>,
    /// Cumulative stage sizes in devices instead of percents, e.g. 10,100,1000.
    #[arg(long, value_name = "COUNTS", value_delimiter = ',', value_parser = parse_count)]
    pub devices_stages: Option<Vec<u64>>,
    /// How long each stage runs before it may advance: 90, 90s, 30m, 2h, 1d [server default 30m].
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    pub bake: Option<i64>,
    /// Decided devices a stage needs before it may advance; also the least the failure rate
    /// is divided by [server default 20].
    #[arg(long, value_name = "N")]
    pub min_sample: Option<u64>,
    /// Failure rate above which the rollout halts: 5% or 0.05 [server default 5%].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_failure_rate: Option<f64>,
    /// Time from the offer to confirming before a device counts as failed [server default 2h].
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    pub deadline: Option<i64>,
    /// Stages advance only when approved (`fota rollout approve`).
    #[arg(long)]
    pub manual: bool,
    /// Halt when the new release resets unexpectedly (watchdog, fault, brown-out) more than
    /// this many times as often per device-hour as the targets still on the old release; 0
    /// turns the check off [server default 2].
    #[arg(long, value_name = "RATIO")]
    pub max_reset_ratio: Option<f64>,
    /// Device-hours the new release must run before its resets may halt it: 10, 0.5
    /// [server default 10].
    #[arg(long, value_name = "HOURS")]
    pub min_device_hours: Option<f64>,
}

impl PlanArgs {
    /// Whether any plan flag was given.
    pub fn given(&self) -> bool {
        self.stages.is_some()
            || self.devices_stages.is_some()
            || self.bake.is_some()
            || self.min_sample.is_some()
            || self.max_failure_rate.is_some()
            || self.deadline.is_some()
            || self.manual
            || self.max_reset_ratio.is_some()
            || self.min_device_hours.is_some()
    }

    /// The `stages` of a request: sizes from `--stages` or `--devices-stages` (else the default
    /// plan's), each with the gate flags given; fields not given are left to the server.
    pub fn stages(&self) -> Value {
        let sizes: Vec<(&str, Value)> = match (&self.stages, &self.devices_stages) {
            (Some(percents), _) => percents.iter().map(|p| ("percent", json!(p))).collect(),
            (None, Some(counts)) => counts.iter().map(|d| ("devices", json!(d))).collect(),
            (None, None) => fota_server::rollout::plan::default_stages()
                .iter()
                .filter_map(|s| s.percent)
                .map(|p| ("percent", json!(p)))
                .collect(),
        };
        let stages: Vec<Value> = sizes
            .into_iter()
            .map(|(key, size)| {
                let mut stage = Map::new();
                stage.insert(key.into(), size);
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        stage.insert(k.into(), v);
                    }
                };
                put("bake_s", self.bake.map(|v| json!(v)));
                put("min_sample", self.min_sample.map(|v| json!(v)));
                put("max_failure_rate", self.max_failure_rate.map(|v| json!(v)));
                put("confirm_deadline_s", self.deadline.map(|v| json!(v)));
                put("auto_advance", self.manual.then_some(json!(false)));
                put("max_reset_ratio", self.max_reset_ratio.map(|v| json!(v)));
                put("min_device_hours", self.min_device_hours.map(|v| json!(v)));
                Value::Object(stage)
            })
            .collect();
        Value::Array(stages)
    }
}

/// `fota rollout start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The release to roll out.
    #[arg(long, value_name = "ID")]
    pub release: i64,
    /// Only devices with this tag (repeat: every tag is required).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only devices running at least this version.
    #[arg(long, value_name = "VERSION")]
    pub version_min: Option<String>,
    /// Only devices running at most this version.
    #[arg(long, value_name = "VERSION")]
    pub version_max: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota rollout status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Rollout id.
    pub id: i64,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota rollout list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only rollouts in this state.
    #[arg(long, value_name = "STATE", value_parser = ["active", "paused", "halted", "aborted", "completed"])]
    pub state: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota rollout watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Rollout id.
    pub id: i64,
    /// Time between polls: 500ms, 2s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print one snapshot and exit 0, whatever the state.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota rollout pause|resume|abort|approve`.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Rollout id.
    pub id: i64,
    /// Print the server's JSON (the rollout's status after the change).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The earlier, good release to put back. Refused if its security counter is below what the
    /// targeted devices hold (their bootloaders would refuse it).
    #[arg(long = "release", value_name = "GOOD_ID")]
    pub release: i64,
    /// Only the devices running this (bad) release [default: the model's whole fleet]. Its
    /// unfinished rollout, if any, is aborted.
    #[arg(long = "from-release", value_name = "BAD_ID")]
    pub from_release: Option<i64>,
    /// Roll back in stages, by the plan flags (as `fota rollout start`) [default: everyone at
    /// once, with no health gate].
    #[arg(long)]
    pub staged: bool,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Run `fota rollout`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    match &args.action {
        Action::Start(a) => start(a, out),
        Action::Status(a) => {
            let client = Client::new(&a.server)?;
            let id = a.id.to_string();
            let value = client.get(&["v1", "rollouts", &id], &[])?;
            show_status(&client, value, a.json, out)
        }
        Action::List(a) => list(a, out),
        Action::Watch(a) => watch(a, out),
        Action::Pause(a) => change(a, "pause", out),
        Action::Resume(a) => change(a, "resume", out),
        Action::Abort(a) => change(a, "abort", out),
        Action::Approve(a) => change(a, "approve", out),
    }
}

/// Run `fota rollback`.
pub fn run_rollback(args: &RollbackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.plan.given() && !args.staged {
        anyhow::bail!(
            "plan flags (--stages, --devices-stages, --bake, --min-sample, --max-failure-rate, --deadline, --manual) need --staged; without it everyone is rolled back at once"
        );
    }
    let client = Client::new(&args.server)?;
    let mut body = json!({ "release_id": args.release });
    if let Some(bad) = args.from_release {
        body["from_release_id"] = json!(bad);
    }
    if args.staged {
        body["stages"] = args.plan.stages();
    }
    let value = client.post_json(&["v1", "rollbacks"], Some(&body))?;
    show_status(&client, value, args.json, out)
}

fn start(args: &StartArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut selector = json!({ "tags": args.tags });
    if let Some(v) = &args.version_min {
        selector["version_min"] = json!(v);
    }
    if let Some(v) = &args.version_max {
        selector["version_max"] = json!(v);
    }
    let mut body = json!({ "release_id": args.release, "selector": selector });
    if args.plan.given() {
        body["stages"] = args.plan.stages();
    }
    let value = client.post_json(&["v1", "rollouts"], Some(&body))?;
    show_status(&client, value, args.json, out)
}

fn show_status(
    client: &Client,
    value: Value,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        return super::print_json(out, &value);
    }
    let status: RolloutStatus = client.decode(value)?;
    for line in status_lines(&status) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn change(args: &ChangeArgs, action: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let id = args.id.to_string();
    let value = client.post_json(&["v1", "rollouts", &id, action], None)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let status: RolloutStatus = client.decode(value)?;
    writeln!(out, "rollout {}: {}", status.id, status.state)?;
    Ok(())
}

fn list(args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let query: Vec<(&str, String)> = args.state.iter().map(|s| ("state", s.clone())).collect();
    let value = client.get(&["v1", "rollouts"], &query)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let list: RolloutList = client.decode(value)?;
    if list.rollouts.is_empty() {
        writeln!(out, "no rollouts")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "KIND",
        "STATE",
        "MODEL",
        "COMPONENT",
        "VERSION",
        "TARGETS",
        "STAGE",
        "FAILURES",
        "CREATED",
        "BY",
    ]);
    for r in &list.rollouts {
        table.row(vec![
            r.id.to_string(),
            r.kind.clone(),
            r.state.clone(),
            r.model.clone(),
            r.component.name().to_string(),
            r.version.clone(),
            r.targets.to_string(),
            format!("{}/{}", r.current_stage, r.stages.len()),
            format!(
                "{}/{} ({})",
                r.counts.failures(),
                r.counts.decided(),
                rate(r.failure_rate)
            ),
            utc(r.created_at),
            r.created_by.clone(),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn devices(n: u64) -> String {
    if n == 1 {
        "1 device".into()
    } else {
        format!("{n} devices")
    }
}

/// A stage's size and how far it reaches over the targets: `10% = 2 devices`, `50 devices`,
/// `100 devices = 20` (a count stage capped at the targets).
fn size(stage: &StageStatus) -> String {
    match (stage.percent, stage.devices) {
        (Some(p), _) => format!("{}% = {}", number(p), devices(stage.reach)),
        (None, Some(d)) if d == stage.reach => devices(d),
        (None, Some(d)) => format!("{} = {}", devices(d), stage.reach),
        (None, None) => "-".into(),
    }
}

/// A stage's minimum sample: `20`, or `1 (20 capped at the stage's 1 device)`.
fn min_sample(stage: &StageStatus) -> String {
    if stage.min_sample_applied < stage.min_sample {
        format!(
            "{} (plan {}, capped at the stage's {})",
            stage.min_sample_applied,
            stage.min_sample,
            devices(stage.cohort)
        )
    } else {
        stage.min_sample.to_string()
    }
}

/// Where the current stage's gate stands: `gate: 3/5 decided (the plan asks 20, capped at the
/// stage's 5 devices); bake 12m left of 30m; advances by itself`.
fn gate_line(s: &RolloutStatus) -> Option<String> {
    let g = s.gate.as_ref()?;
    let mut line = format!("gate: {}/{} decided", g.decided, g.min_sample);
    if g.min_sample < g.min_sample_asked {
        line.push_str(&format!(
            " (the plan asks {}, capped at the stage's devices)",
            g.min_sample_asked
        ));
    }
    line.push_str(&format!(
        ", {} updating, {} not offered yet",
        g.in_flight, g.not_offered
    ));
    line.push_str(&if g.bake_left_s > 0 {
        format!(
            "; bake {} left of {}",
            duration(g.bake_left_s),
            duration(g.bake_s)
        )
    } else {
        format!("; baked ({})", duration(g.bake_s))
    });
    line.push_str(&if !g.needs_approval {
        "; advances by itself".to_string()
    } else if g.approved {
        "; approved".to_string()
    } else {
        format!("; advances when approved: fota rollout approve {}", s.id)
    });
    Some(line)
}

/// Every device that got an offer, whatever became of it.
fn offered_so_far(c: &StateCounts) -> u64 {
    c.in_flight() + c.decided()
}

/// `rollout 7: rollout of f429 2.0.0 (release 5) to 200 targets, active, stage 1/3`.
fn headline(s: &RolloutStatus) -> String {
    let from = match s.from_release_id {
        Some(bad) => format!(" running release {bad}"),
        None => String::new(),
    };
    format!(
        "rollout {}: {} of {} {}{} (release {}) to {} targets{from}, {}, stage {}/{}",
        s.id,
        s.kind,
        s.model,
        super::release::component_prefix(s.component),
        s.version,
        s.release_id,
        s.targets,
        s.state,
        s.current_stage,
        s.stages.len()
    )
}

/// `failures 3/40 decided = 7.5% (limit 5.0%)`, with a note when the gate divides by the
/// minimum sample rather than the decided devices.
fn failure_line(s: &RolloutStatus) -> String {
    let (failures, decided) = (s.counts.failures(), s.counts.decided());
    let mut line = format!(
        "failures {failures}/{decided} decided = {} (limit {}",
        rate(s.failure_rate),
        rate(s.max_failure_rate)
    );
    let least = s.gate.as_ref().map(|g| g.rate_min_sample).or_else(|| {
        s.stages
            .iter()
            .find(|st| st.number == s.current_stage)
            .map(|st| st.min_sample)
    });
    if let Some(least) = least {
        if decided < least && s.state != "completed" {
            line.push_str(&format!(
                "; the gate divides by at least the minimum sample, {least}"
            ));
        }
    }
    line.push(')');
    line
}

/// `resets 12 on 8 devices in 3.1 device-hours = 3.871/h; baseline 0.0200/h (4 in 250.0
/// device-hours); 193.5 x (limit 2.0 x after 10.0 device-hours)`.
fn reset_line(s: &RolloutStatus) -> Option<String> {
    let r = s.resets.as_ref()?;
    let limit = if r.max_ratio == 0.0 {
        "no limit".to_string()
    } else {
        format!(
            "limit {:.1} x after {:.1} device-hours",
            r.max_ratio, r.min_device_hours
        )
    };
    Some(format!(
        "unexpected resets {} on {} devices in {:.1} device-hours = {:.3}/h; baseline {:.4}/h ({} in {:.1} device-hours); {:.1} x ({limit})",
        r.new_resets,
        r.new_devices,
        r.new_device_hours,
        r.new_rate,
        r.baseline_rate,
        r.baseline_resets,
        r.baseline_device_hours,
        r.ratio,
    ))
}

/// The human `rollout status`.
fn status_lines(s: &RolloutStatus) -> Vec<String> {
    let mut lines = vec![headline(s)];
    let mut about = format!("started {} by {}", utc(s.created_at), s.created_by);
    if !s.tags.is_empty() {
        about.push_str(&format!("; devices tagged {}", s.tags.join(", ")));
    }
    if s.updated_at != s.created_at {
        about.push_str(&format!("; last change {}", utc(s.updated_at)));
    }
    lines.push(about);
    lines.push(String::new());

    let mut progress = Table::new(&[
        "STAGE",
        "SIZE",
        "STATUS",
        "OFFERED",
        "DOWNLOADING",
        "INSTALLED",
        "CONFIRMED",
        "FAILED",
        "ROLLED_BACK",
        "TIMED_OUT",
        "RESETS",
    ]);
    let counts = |c: &StateCounts| {
        [
            c.offered,
            c.downloading,
            c.installed,
            c.confirmed,
            c.failed,
            c.rolled_back,
            c.timed_out,
        ]
        .map(|n| n.to_string())
    };
    for st in &s.stages {
        let mut row = vec![st.number.to_string(), size(st), st.status.clone()];
        row.extend(counts(&st.counts));
        row.push(match &st.resets {
            Some(r) => format!("{} ({:.2}/h)", r.resets, r.rate),
            None => "-".into(),
        });
        progress.row(row);
    }
    let mut total = vec![
        "all".into(),
        format!("{} devices", s.targets),
        String::new(),
    ];
    total.extend(counts(&s.counts));
    total.push(match &s.resets {
        Some(r) => format!("{} ({:.2}/h)", r.new_resets, r.new_rate),
        None => "-".into(),
    });
    progress.row(total);
    lines.extend(progress.lines());
    lines.push(String::new());

    let mut plan = Table::new(&[
        "STAGE",
        "BAKE",
        "MIN_SAMPLE",
        "MAX_FAILURES",
        "DEADLINE",
        "MAX_RESETS",
        "ADVANCE",
    ]);
    for st in &s.stages {
        plan.row(vec![
            st.number.to_string(),
            duration(st.bake_s),
            min_sample(st),
            rate(st.max_failure_rate),
            duration(st.confirm_deadline_s),
            if st.max_reset_ratio == 0.0 {
                "off".into()
            } else {
                format!("{} x after {} h", st.max_reset_ratio, st.min_device_hours)
            },
            if st.auto_advance { "auto" } else { "manual" }.into(),
        ]);
    }
    lines.extend(plan.lines());
    lines.push(String::new());

    lines.push(failure_line(s));
    lines.extend(reset_line(s));
    if s.counts.eligible > 0 {
        lines.push(format!("not offered yet: {}", s.counts.eligible));
    }
    if s.counts.protection_blocked > 0 {
        lines.push(format!(
            "skipped, write protection covers the target slot: {}",
            s.counts.protection_blocked
        ));
    }
    if s.counts.security_counter_blocked > 0 {
        lines.push(format!(
            "skipped, they hold a security counter above the release's (anti-rollback): {}",
            s.counts.security_counter_blocked
        ));
    }
    lines.extend(state_lines(s));
    lines
}

/// The halt reason in words, the gate, and what happens next.
fn state_lines(s: &RolloutStatus) -> Vec<String> {
    let mut lines = Vec::new();
    if s.state == "halted" {
        lines.push(format!(
            "halted: {}",
            s.halt_message.as_deref().unwrap_or("no reason recorded")
        ));
    }
    lines.extend(gate_line(s));
    if let Some(next) = &s.next {
        lines.push(format!("next: {next}"));
    }
    lines
}

/// The watch view: per stage, offered / installed / confirmed / failed.
fn watch_frame(s: &RolloutStatus, interval: Duration) -> Vec<String> {
    let mut lines = vec![headline(s)];
    let mut table = Table::new(&[
        "STAGE",
        "SIZE",
        "STATUS",
        "OFFERED",
        "INSTALLED",
        "CONFIRMED",
        "FAILED",
    ]);
    let row = |label: String, size: String, status: String, c: &StateCounts| {
        vec![
            label,
            size,
            status,
            offered_so_far(c).to_string(),
            c.installed.to_string(),
            c.confirmed.to_string(),
            c.failures().to_string(),
        ]
    };
    for st in &s.stages {
        table.row(row(
            st.number.to_string(),
            size(st),
            st.status.clone(),
            &st.counts,
        ));
    }
    table.row(row(
        "all".into(),
        format!("{} devices", s.targets),
        String::new(),
        &s.counts,
    ));
    lines.extend(table.lines());
    lines.push(failure_line(s));
    lines.extend(reset_line(s));
    lines.extend(state_lines(s));
    lines.push(format!(
        "updated {}, every {}; Ctrl-C stops watching, not the rollout",
        utc(format::now_ms()),
        humantime(interval)
    ));
    lines
}

/// One line per poll, for logs and pipes.
fn watch_line(s: &RolloutStatus) -> String {
    let c = &s.counts;
    let current = s
        .stages
        .iter()
        .find(|st| st.number == s.current_stage)
        .map(|st| format!(" ({})", size(st)))
        .unwrap_or_default();
    let mut line = format!(
        "{} rollout {} {}, stage {}/{}{current}: offered {}, installed {}, confirmed {}, failed {}; {}",
        utc(format::now_ms()),
        s.id,
        s.state,
        s.current_stage,
        s.stages.len(),
        offered_so_far(c),
        c.installed,
        c.confirmed,
        c.failures(),
        failure_line(s)
    );
    if let Some(m) = s.halt_message.as_deref().filter(|_| s.state == "halted") {
        line.push_str(&format!("; halted: {m}"));
    }
    if let Some(gate) = gate_line(s) {
        line.push_str(&format!("; {gate}"));
    }
    if let Some(next) = &s.next {
        line.push_str(&format!("; next: {next}"));
    }
    line
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        duration(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Polls in a row that may fail to reach the server before `watch` gives up.
const WATCH_RETRIES: u32 = 5;

fn watch(args: &WatchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.interval < Duration::from_millis(100) {
        anyhow::bail!("--interval must be at least 100ms");
    }
    let client = Client::new(&args.server)?;
    let id = args.id.to_string();
    let redraw = !args.once
        && std::io::stdout().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let mut unreachable = 0;
    loop {
        let status: RolloutStatus = match client.get(&["v1", "rollouts", &id], &[]) {
            Ok(value) => {
                unreachable = 0;
                client.decode(value)?
            }
            Err(e @ RequestError::Unreachable { .. }) => {
                unreachable += 1;
                if unreachable > WATCH_RETRIES || args.once {
                    return Err(e.into());
                }
                std::thread::sleep(args.interval);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if redraw {
            // Home, clear the screen, draw.
            write!(out, "\x1b[H\x1b[2J")?;
            for line in watch_frame(&status, args.interval) {
                writeln!(out, "{line}")?;
            }
        } else {
            writeln!(out, "{}", watch_line(&status))?;
        }
        out.flush()?;
        if args.once {
            return Ok(());
        }
        match status.state.as_str() {
            "completed" => return Ok(()),
            "halted" => anyhow::bail!(
                "rollout {} halted: {}",
                status.id,
                status
                    .halt_message
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ),
            "aborted" => anyhow::bail!(
                "rollout {} was aborted (fota audit --rollout {} says by whom)",
                status.id,
                status.id
            ),
            _ => std::thread::sleep(args.interval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fota_server::api::admin::rollouts::{GateStatus, ResetStatus};

    /// A rollout of 20 targets on the default plan, waiting in its manual first stage.
    fn waiting() -> RolloutStatus {
        let stage = |number: u32, percent: f64, reach: u64, cohort: u64| StageStatus {
            number,
            percent: Some(percent),
            devices: None,
            bake_s: 1800,
            min_sample: 20,
            min_sample_applied: cohort.min(20),
            reach,
            cohort,
            max_failure_rate: 0.05,
            confirm_deadline_s: 7200,
            max_reset_ratio: 2.0,
            min_device_hours: 10.0,
            auto_advance: false,
            status: if number == 1 { "current" } else { "pending" }.into(),
            counts: StateCounts::default(),
            resets: None,
        };
        RolloutStatus {
            id: 7,
            kind: "rollout".into(),
            state: "active".into(),
            release_id: 3,
            version: "1.1.0".into(),
            component: Default::default(),
            model: "f429".into(),
            tags: Vec::new(),
            version_min: None,
            version_max: None,
            from_release_id: None,
            targets: 20,
            current_stage: 1,
            counts: StateCounts {
                confirmed: 1,
                eligible: 19,
                ..StateCounts::default()
            },
            failure_rate: 0.0,
            gate_failure_rate: 0.0,
            max_failure_rate: 0.05,
            approved: false,
            next: Some("baking: 12m left of 30m".into()),
            gate: Some(GateStatus {
                decided: 1,
                min_sample: 1,
                min_sample_asked: 20,
                in_flight: 0,
                not_offered: 0,
                bake_s: 1800,
                bake_left_s: 720,
                needs_approval: true,
                approved: false,
                rate_min_sample: 1,
            }),
            resets: Some(ResetStatus {
                new_resets: 0,
                new_devices: 0,
                new_device_hours: 0.2,
                new_rate: 0.0,
                baseline_resets: 3,
                baseline_device_hours: 150.0,
                baseline_rate: 4.0 / 150.0,
                ratio: 0.0,
                max_ratio: 2.0,
                min_device_hours: 10.0,
            }),
            halt_reason: None,
            halt_message: None,
            stages: vec![
                stage(1, 1.0, 1, 1),
                stage(2, 10.0, 2, 1),
                stage(3, 50.0, 10, 8),
                stage(4, 100.0, 20, 10),
            ],
            created_at: 0,
            created_by: "alice".into(),
            updated_at: 0,
        }
    }

    /// A table line with its padding folded to single spaces.
    fn words(line: &str) -> String {
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn status_and_watch_say_what_the_gate_waits_for() {
        let s = waiting();
        let gate = "gate: 1/1 decided (the plan asks 20, capped at the stage's devices), 0 updating, 0 not offered yet; bake 12m left of 30m; advances when approved: fota rollout approve 7";
        let next = "next: baking: 12m left of 30m";
        let resets = "unexpected resets 0 on 0 devices in 0.2 device-hours = 0.000/h; baseline 0.0267/h (3 in 150.0 device-hours); 0.0 x (limit 2.0 x after 10.0 device-hours)";
        let status = status_lines(&s);
        for wanted in [gate, next, resets] {
            assert!(
                status.iter().any(|l| l == wanted),
                "{wanted:?} not in {status:#?}"
            );
        }
        assert!(
            status
                .iter()
                .any(|l| words(l).starts_with("3 30m 8 (plan 20, capped at the stage's 8 devices)")),
            "{status:#?}"
        );
        assert!(
            status
                .iter()
                .any(|l| words(l).starts_with("1 1% = 1 device current")),
            "{status:#?}"
        );
        // The terminal view has the same lines; the line view has them on its one line.
        let frame = watch_frame(&s, Duration::from_secs(2));
        for wanted in [gate, next, resets] {
            assert!(
                frame.iter().any(|l| l == wanted),
                "{wanted:?} not in {frame:#?}"
            );
        }
        let line = watch_line(&s);
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line}");
        assert!(line.contains(&format!("; {gate}; {next}")), "{line}");
    }

    #[test]
    fn a_halted_rollout_says_why_and_what_next() {
        let mut s = waiting();
        s.state = "halted".into();
        s.halt_message = Some("stage 1: 1 failures (0 failed, 1 rolled back, 0 silent) among 1 decided devices = 100.0% (of at least the minimum sample 1), above the 5.0% limit".into());
        s.next = Some("halted: fota rollout resume 7 after a fix".into());
        let status = status_lines(&s);
        let halted = status
            .iter()
            .position(|l| l.starts_with("halted: stage 1: 1 failures"));
        let next = status
            .iter()
            .position(|l| l == "next: halted: fota rollout resume 7 after a fix");
        assert!(
            halted.is_some() && next.is_some() && halted < next,
            "{status:#?}"
        );
        let frame = watch_frame(&s, Duration::from_secs(2));
        assert!(
            frame.iter().any(|l| l.starts_with("halted: stage 1")),
            "{frame:#?}"
        );
        assert!(watch_line(&s).contains("; halted: stage 1: 1 failures"));
    }

    #[test]
    fn plans_fill_only_the_given_fields() {
        let plan = PlanArgs {
            stages: Some(vec![5.0, 100.0]),
            bake: Some(60),
            manual: true,
            ..PlanArgs::default()
        };
        assert!(plan.given());
        assert_eq!(
            plan.stages(),
            json!([
                {"percent": 5.0, "bake_s": 60, "auto_advance": false},
                {"percent": 100.0, "bake_s": 60, "auto_advance": false}
            ])
        );
        let plan = PlanArgs {
            max_failure_rate: Some(0.1),
            ..PlanArgs::default()
        };
        let stages = plan.stages();
        assert_eq!(stages.as_array().map(Vec::len), Some(4));
        assert_eq!(stages[0], json!({"percent": 1.0, "max_failure_rate": 0.1}));
        let plan = PlanArgs {
            devices_stages: Some(vec![10, 100]),
            ..PlanArgs::default()
        };
        assert_eq!(plan.stages(), json!([{"devices": 10}, {"devices": 100}]));
        assert!(!PlanArgs::default().given());
    }
}
