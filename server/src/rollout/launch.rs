//! Starting rollouts, with every rule a start obeys: a staged rollout of a new release, and a
//! fleet rollback (a roll-forward to an earlier, good release). The HTTP handlers only
//! translate; what is refused, and why, is decided here.
//!
//! - The plan and the selector are valid ([`plan`]), and the plan fits the targets: every stage
//!   takes at least one device ([`cohort::plan_reach`]), or the start is refused with what
//!   would fit.
//! - One unfinished (active, paused or halted) rollout per model: a new rollout is refused while
//!   one is; a rollback aborts it first, in the transaction that creates the rollback. So a
//!   device is never offered a bootloader and an application at the same time: a model rolls
//!   out one release, of one component, at a time.
//! - Targets are the model's devices the selector picks, minus those already on the release
//!   (for a bootloader release: already running that stage-1 version). The selector's version
//!   range always selects by the application a device runs.
//! - Anti-rollback: a rollout skips devices whose bootloaders hold a higher security counter
//!   (stored as `security_counter_blocked`) and is refused if that is all of them; a rollback,
//!   which must bring back every device on the bad release, is refused if any would refuse it.

use super::plan::{self, PlanError, Selector, StageSize, StageSpec};
use super::Engine;
use crate::domain::version::version_key;
use crate::domain::{anti_rollback, cohort, DeviceState, RolloutKind};
use crate::store::{
    now_ms, AuditEntry, NewRollout, ReleaseRecord, RolloutRow, SkippedTarget, StageRow, Store,
    StoreError, Target, TargetFilter,
};
use fota_protocol::messages::Component;

/// Why a rollout or rollback was not started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The plan or the selector is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// No such release.
    #[error("no release {0}")]
    ReleaseNotFound(i64),
    /// The model has an unfinished rollout.
    #[error("rollout {other} for {model} is unfinished (active, paused or halted): abort it first, or start a rollback")]
    RolloutInProgress {
        /// The unfinished rollout.
        other: i64,
        /// Its model.
        model: String,
    },
    /// Nothing to roll out to.
    #[error("{0}")]
    NoTargets(String),
    /// The targets run out before the plan's last stage: some stage would take no device.
    #[error("{0}")]
    PlanDoesNotFit(String),
    /// Devices hold a security counter above the release's.
    #[error("release {version} has security counter {counter} but {whom} hold {held}: their bootloaders would refuse it; roll forward to a release with counter >= {held}")]
    CounterTooLow {
        /// The release's version.
        version: String,
        /// Its security counter.
        counter: i64,
        /// Who holds more: "targeted devices", "all 3 targeted devices".
        whom: String,
        /// The highest counter held.
        held: u32,
    },
    /// A rollback between releases of different models.
    #[error("release {bad} is for {bad_model}, release {good} for {good_model}")]
    ModelMismatch {
        /// The release rolled back from.
        bad: i64,
        /// Its model.
        bad_model: String,
        /// The release rolled back to.
        good: i64,
        /// Its model.
        good_model: String,
    },
    /// A fleet rollback between an application release and a bootloader release.
    #[error("release {bad} is {bad_component} release and release {good} {good_component} one: a rollback puts back an earlier release of the same component")]
    ComponentMismatch {
        /// The release rolled back from.
        bad: i64,
        /// What it is ("an application", "a bootloader").
        bad_component: &'static str,
        /// The release put back.
        good: i64,
        /// What it is.
        good_component: &'static str,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LaunchError {
    /// The stable code of a refusal (`internal` for a storage failure).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Plan(e) => e.code(),
            Self::ReleaseNotFound(_) => "release_not_found",
            Self::RolloutInProgress { .. } => "rollout_in_progress",
            Self::NoTargets(_) => "no_targets",
            Self::PlanDoesNotFit(_) => "plan_does_not_fit",
            Self::CounterTooLow { .. } => "security_counter_too_low",
            Self::ModelMismatch { .. } => "model_mismatch",
            Self::ComponentMismatch { .. } => "component_mismatch",
            Self::Store(_) => "internal",
        }
    }
}

/// A staged rollout to start.
#[derive(Debug, Clone, Copy)]
pub struct RolloutRequest<'a> {
    /// The release to roll out.
    pub release_id: i64,
    /// Which of the model's devices.
    pub selector: &'a Selector,
    /// The stages; `None`: [`plan::default_stages`].
    pub stages: Option<&'a [StageSpec]>,
}

/// A fleet rollback to start.
#[derive(Debug, Clone, Copy)]
pub struct RollbackRequest<'a> {
    /// The earlier, good release to put back.
    pub release_id: i64,
    /// Only the devices running this (bad) release; `None`: the whole fleet of the model.
    pub from_release_id: Option<i64>,
    /// The stages; `None`: everyone at once.
    pub stages: Option<&'a [StageSpec]>,
}

/// Start a staged rollout of a release, as `actor`. Returns the rollout as stored.
pub async fn start_rollout(
    store: &Store,
    engine: &Engine,
    actor: &str,
    req: RolloutRequest<'_>,
) -> Result<RolloutRow, LaunchError> {
    let started = std::time::Instant::now();
    let default_stages;
    let specs = match req.stages {
        Some(s) => s,
        None => {
            default_stages = plan::default_stages();
            &default_stages
        }
    };
    let stages = stage_rows(specs)?;
    let (min, max) = req.selector.validate()?;
    let release = release(store, req.release_id).await?;
    if let Some(other) = store.unfinished_rollout(&release.model).await? {
        return Err(LaunchError::RolloutInProgress {
            other,
            model: release.model,
        });
    }
    let filter = target_filter(
        &release.model,
        &req.selector.tags,
        min.as_ref().map(version_key),
        max.as_ref().map(version_key),
        None,
        &release,
    );
    let targets = store.targets(&filter).await?;
    tracing::debug!(
        targets = targets.len(),
        ms = started.elapsed().as_millis() as u64,
        "selected targets"
    );
    if targets.is_empty() {
        return Err(LaunchError::NoTargets(format!(
            "no {} device matches the selector (or all run {}{} already)",
            release.model,
            component_prefix(release.component),
            release.version
        )));
    }
    let split = split_by_counter(targets, &release);
    if split.offerable.is_empty() {
        return Err(counter_too_low(
            &release,
            split.highest_held,
            format!("all {} targeted devices", split.blocked.len()),
        ));
    }
    fits(&stages, split.offerable.len() as u64)?;
    let new = NewRollout {
        release_id: release.id,
        kind: RolloutKind::Rollout,
        model: release.model.clone(),
        selector_tags: req.selector.tags.clone(),
        version_min_key: min.as_ref().map(version_key),
        version_max_key: max.as_ref().map(version_key),
        from_release_id: None,
        stages,
        created_by: actor.to_string(),
    };
    let detail = serde_json::json!({
        "version": release.version,
        "targets": split.offerable.len() + split.blocked.len(),
        "security_counter_blocked": split.blocked.len(),
        "selector": req.selector,
        "stages": specs,
    });
    let row = store
        .create_rollout(
            &new,
            &split.offerable,
            &split.blocked,
            now_ms(),
            detail,
            None,
        )
        .await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "rollout written");
    engine.changed(row.id);
    tracing::info!(
        actor = %actor,
        rollout = row.id,
        targets = split.offerable.len(),
        security_counter_blocked = split.blocked.len(),
        "rollout started"
    );
    Ok(row)
}

/// Start a fleet rollback, as `actor`: a new rollout of an earlier release to the devices that
/// run the bad one (or the whole fleet), at once or staged, aborting the model's unfinished
/// rollout in the same transaction. Returns the rollback as stored.
pub async fn start_rollback(
    store: &Store,
    engine: &Engine,
    actor: &str,
    req: RollbackRequest<'_>,
) -> Result<RolloutRow, LaunchError> {
    let everyone = [StageSpec {
        percent: Some(100.0),
        bake_s: Some(0),
        min_sample: Some(0),
        max_failure_rate: Some(1.0),
        ..StageSpec::default()
    }];
    let stages = stage_rows(req.stages.unwrap_or(&everyone))?;
    let release = release(store, req.release_id).await?;
    let bad = match req.from_release_id {
        Some(id) => {
            let bad = self::release(store, id).await?;
            if bad.component != release.component {
                return Err(LaunchError::ComponentMismatch {
                    bad: bad.id,
                    bad_component: a_component(bad.component),
                    good: release.id,
                    good_component: a_component(release.component),
                });
            }
            if bad.model != release.model {
                return Err(LaunchError::ModelMismatch {
                    bad: bad.id,
                    bad_model: bad.model,
                    good: release.id,
                    good_model: release.model,
                });
            }
            Some(bad)
        }
        None => None,
    };
    let filter = target_filter(
        &release.model,
        &[],
        None,
        None,
        bad.as_ref().map(|b| b.version.clone()),
        &release,
    );
    // A rollback must bring back every device on the bad release: one that would refuse the
    // image refuses the whole rollback, rather than being left behind.
    let split = split_by_counter(store.targets(&filter).await?, &release);
    if !split.blocked.is_empty() {
        return Err(counter_too_low(
            &release,
            split.highest_held,
            "targeted devices".to_string(),
        ));
    }
    let targets = split.offerable;
    if targets.is_empty() {
        return Err(LaunchError::NoTargets(
            "no device runs the release to roll back from".to_string(),
        ));
    }
    fits(&stages, targets.len() as u64)?;
    let now = now_ms();
    let unfinished = store.unfinished_rollout(&release.model).await?;
    let abort_first = unfinished.map(|id| {
        (
            id,
            AuditEntry::new(
                actor,
                crate::domain::RolloutAction::Abort.audit_name(),
                Some(id),
                None,
                serde_json::json!({"reason": "replaced by a fleet rollback"}),
                now,
            ),
        )
    });
    let new = NewRollout {
        release_id: release.id,
        kind: RolloutKind::Rollback,
        model: release.model.clone(),
        selector_tags: Vec::new(),
        version_min_key: None,
        version_max_key: None,
        from_release_id: bad.as_ref().map(|b| b.id),
        stages,
        created_by: actor.to_string(),
    };
    let detail = serde_json::json!({
        "version": release.version,
        "from_version": bad.as_ref().map(|b| b.version.clone()),
        "targets": targets.len(),
        "aborted": unfinished,
    });
    let row = store
        .create_rollout(&new, &targets, &[], now, detail, abort_first)
        .await?;
    if let Some(aborted) = unfinished {
        // Its in-flight downloads are told to stop (over MQTT, when configured).
        engine.changed(aborted);
    }
    engine.changed(row.id);
    tracing::info!(
        actor = %actor,
        rollout = row.id,
        targets = targets.len(),
        "fleet rollback started"
    );
    Ok(row)
}

async fn release(store: &Store, id: i64) -> Result<ReleaseRecord, LaunchError> {
    store
        .release(id)
        .await?
        .ok_or(LaunchError::ReleaseNotFound(id))
}

/// "an application" or "a bootloader", for messages.
fn a_component(c: Component) -> &'static str {
    match c {
        Component::Application => "an application",
        Component::Bootloader => "a bootloader",
    }
}

/// "" or "bootloader ", before a version in messages.
fn component_prefix(c: Component) -> &'static str {
    match c {
        Component::Application => "",
        Component::Bootloader => "bootloader ",
    }
}

/// Refuse a plan some stage of which would take no device over `targets` (the targets run out
/// before it), saying how far each stage reaches and a plan that fits.
fn fits(stages: &[StageRow], targets: u64) -> Result<(), LaunchError> {
    let reach = cohort::plan_reach(
        stages.iter().map(|s| (s.percent_bp, s.device_count)),
        targets,
    );
    // Stages after the first one that reaches every target take nobody.
    let Some(full) = reach.iter().position(|&r| r >= targets) else {
        return Ok(());
    };
    if full + 1 >= stages.len() {
        return Ok(());
    }
    let size = |s: &StageRow| match (s.percent_bp, s.device_count) {
        (Some(bp), _) => format!("{}%", bp as f64 / 100.0),
        (None, Some(1)) => "1 device".to_string(),
        (None, Some(n)) => format!("{n} devices"),
        (None, None) => "?".to_string(),
    };
    let reached = stages[..=full]
        .iter()
        .zip(&reach)
        .map(|(s, r)| format!("{}: {r}", size(s)))
        .collect::<Vec<_>>()
        .join(", ");
    // The stages that take devices, ending at 100%: each still takes at least one.
    let mut fitting: Vec<String> = stages[..full].iter().map(size).collect();
    fitting.push("100%".to_string());
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let empty = if full + 2 == stages.len() {
        format!("stage {} would take no device", full + 2)
    } else {
        format!("stages {}-{} would take no device", full + 2, stages.len())
    };
    Err(LaunchError::PlanDoesNotFit(format!(
        "{targets} target device{} {} this plan by stage {} of {} (devices reached: {reached}), so {empty}: use at most {} stage{}, e.g. {}, or target more devices",
        plural(targets),
        if targets == 1 { "fills" } else { "fill" },
        full + 1,
        stages.len(),
        full + 1,
        plural(full as u64 + 1),
        fitting.join(", "),
    )))
}

/// A validated plan as the rows the store keeps.
fn stage_rows(specs: &[StageSpec]) -> Result<Vec<StageRow>, PlanError> {
    Ok(plan::parse_stages(specs)?
        .iter()
        .enumerate()
        .map(|(i, s)| StageRow {
            idx: i as i64,
            percent_bp: match s.size {
                StageSize::BasisPoints(bp) => Some(i64::from(bp)),
                StageSize::Devices(_) => None,
            },
            device_count: match s.size {
                StageSize::Devices(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                StageSize::BasisPoints(_) => None,
            },
            bake_s: s.bake_s,
            min_sample: i64::try_from(s.gate.min_sample).unwrap_or(i64::MAX),
            max_failure_ppm: i64::from(s.gate.max_failure_ppm),
            confirm_deadline_s: s.gate.confirm_deadline_s,
            max_reset_ratio_pct: i64::from(s.gate.max_reset_ratio_pct),
            min_device_s: i64::try_from(s.gate.min_device_s).unwrap_or(i64::MAX),
            auto_advance: s.auto_advance,
        })
        .collect())
}

/// The target filter of a rollout about to be created: the model's devices, with every tag, in
/// the application version range, running `running_version` if given, and not on the release
/// already (versions of the release's component: the application's, or the stage-1
/// bootloader's).
pub fn target_filter(
    model: &str,
    tags: &[String],
    min: Option<i64>,
    max: Option<i64>,
    running_version: Option<String>,
    release: &ReleaseRecord,
) -> TargetFilter {
    TargetFilter {
        model: model.to_string(),
        tags: tags.to_vec(),
        version_min_key: min,
        version_max_key: max,
        running_version,
        exclude_version: Some(release.version.clone()),
        component: release.component,
    }
}

/// Targets split by anti-rollback: those that may be offered the release, and those whose
/// bootloaders hold a higher security counter (with the reason), plus the highest counter held.
struct CounterSplit {
    offerable: Vec<String>,
    blocked: Vec<SkippedTarget>,
    highest_held: u32,
}

fn split_by_counter(targets: Vec<Target>, release: &ReleaseRecord) -> CounterSplit {
    let counter = anti_rollback::from_stored(Some(release.security_counter)).unwrap_or(0);
    let mut split = CounterSplit {
        offerable: Vec::with_capacity(targets.len()),
        blocked: Vec::new(),
        highest_held: 0,
    };
    for t in targets {
        let held = anti_rollback::held(
            anti_rollback::from_stored(t.reported_counter),
            anti_rollback::from_stored(t.running_release_counter),
        );
        split.highest_held = split.highest_held.max(held);
        if anti_rollback::blocks(held, counter) {
            split.blocked.push(SkippedTarget {
                id: t.id,
                state: DeviceState::SecurityCounterBlocked,
                reason: anti_rollback::reason(held, counter),
            });
        } else {
            split.offerable.push(t.id);
        }
    }
    split
}

fn counter_too_low(release: &ReleaseRecord, held: u32, whom: String) -> LaunchError {
    LaunchError::CounterTooLow {
        version: release.version.clone(),
        counter: release.security_counter,
        whom,
        held,
    }
}
