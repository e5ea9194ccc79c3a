//! Rollout plans: ordered stages, each a cumulative size (percent of targets or absolute device
//! count), a bake time and a health gate; and the target selector. Refusals are [`PlanError`]s.

use super::gate::HealthGate;
use crate::domain::names::{self, NameError};
use fota_protocol::ImageVersion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most stages a plan may have.
pub const MAX_STAGES: usize = 20;
/// Most tags a selector may require (every one of them).
pub const MAX_SELECTOR_TAGS: usize = 16;

/// How big a stage is, cumulatively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageSize {
    /// Basis points of the targets (100 = 1%, 10000 = 100%).
    BasisPoints(u32),
    /// This many devices.
    Devices(u64),
}

/// One stage as stored and evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagePlan {
    /// Cumulative size.
    pub size: StageSize,
    /// Seconds the stage must run before it may advance.
    pub bake_s: i64,
    /// Its health gate.
    pub gate: HealthGate,
    /// Advance without approval.
    pub auto_advance: bool,
}

/// A stage as the API takes it. Give `percent` or `devices`; the rest default to the plan's
/// defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Cumulative percent of the targets (above 0, at most 100). Exactly one of `percent` and
    /// `devices`.
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub percent: Option<f64>,
    /// Cumulative number of devices (at least 1).
    #[schema(minimum = 1)]
    pub devices: Option<u64>,
    /// Seconds to bake before advancing (default 1800, at most 30 days).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub bake_s: Option<i64>,
    /// Decided devices needed before advancing (default 20).
    pub min_sample: Option<u64>,
    /// Largest failure rate, 0-1 (default 0.05).
    #[schema(minimum = 0, maximum = 1)]
    pub max_failure_rate: Option<f64>,
    /// Seconds from offer to confirmation before a device counts as failed (default 7200, at
    /// most 30 days).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub confirm_deadline_s: Option<i64>,
    /// Advance without approval (default true).
    pub auto_advance: Option<bool>,
    /// Largest tolerated ratio of the new release's unexpected resets per device-hour to the
    /// baseline's (the rollout's targets still on the old release): default 2.0; 0 turns the
    /// check off, otherwise at least 1.
    #[schema(minimum = 0, maximum = 1000)]
    pub max_reset_ratio: Option<f64>,
    /// Device-hours the new release must run before its resets may halt it (default 10).
    #[schema(minimum = 0, maximum = 1000000)]
    pub min_device_hours: Option<f64>,
}

/// Defaults for stage fields left out.
pub const DEFAULT_BAKE_S: i64 = 1800;
/// Default minimum sample.
pub const DEFAULT_MIN_SAMPLE: u64 = 20;
/// Default maximum failure rate (5%).
pub const DEFAULT_MAX_FAILURE_PPM: u32 = 50_000;
/// Default confirmation deadline (2 h).
pub const DEFAULT_CONFIRM_DEADLINE_S: i64 = 7200;
/// Default reset limit: twice the baseline's rate.
pub const DEFAULT_MAX_RESET_RATIO: f64 = 2.0;
/// Default device-hours before resets may halt.
pub const DEFAULT_MIN_DEVICE_HOURS: f64 = 10.0;

/// The default plan: 1% -> 10% -> 50% -> 100%.
pub fn default_stages() -> Vec<StageSpec> {
    [1.0, 10.0, 50.0, 100.0]
        .into_iter()
        .map(|p| StageSpec {
            percent: Some(p),
            ..StageSpec::default()
        })
        .collect()
}

/// Why a plan or a selector is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The stages are not a plan (code `invalid_plan`).
    #[error("{0}")]
    Plan(String),
    /// The selector's versions are not a range (code `invalid_selector`).
    #[error("{0}")]
    Selector(String),
    /// A selector tag breaks the name rules.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl PlanError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Plan(_) => "invalid_plan",
            Self::Selector(_) => "invalid_selector",
            Self::Name(e) => e.code(),
        }
    }
}

fn invalid(message: impl Into<String>) -> PlanError {
    PlanError::Plan(message.into())
}

/// Turn API stages into a validated plan: sizes grow strictly, values are in range.
pub fn parse_stages(specs: &[StageSpec]) -> Result<Vec<StagePlan>, PlanError> {
    if specs.is_empty() || specs.len() > MAX_STAGES {
        return Err(invalid(format!("a plan has 1-{MAX_STAGES} stages")));
    }
    let mut out: Vec<StagePlan> = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let n = i + 1;
        let size = match (s.percent, s.devices) {
            (Some(p), None) => {
                if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                    return Err(invalid(format!("stage {n}: percent must be in (0, 100]")));
                }
                StageSize::BasisPoints((p * 100.0).round().max(1.0) as u32)
            }
            (None, Some(d)) if d > 0 => StageSize::Devices(d),
            (None, Some(_)) => {
                return Err(invalid(format!("stage {n}: devices must be at least 1")))
            }
            _ => {
                return Err(invalid(format!(
                    "stage {n}: give exactly one of percent and devices"
                )))
            }
        };
        let rate = s
            .max_failure_rate
            .unwrap_or(f64::from(DEFAULT_MAX_FAILURE_PPM) / 1e6);
        if !(rate.is_finite() && (0.0..=1.0).contains(&rate)) {
            return Err(invalid(format!(
                "stage {n}: max_failure_rate must be in [0, 1]"
            )));
        }
        let bake_s = s.bake_s.unwrap_or(DEFAULT_BAKE_S);
        let deadline = s.confirm_deadline_s.unwrap_or(DEFAULT_CONFIRM_DEADLINE_S);
        if !(0..=30 * 86_400).contains(&bake_s) {
            return Err(invalid(format!("stage {n}: bake_s must be 0-2592000")));
        }
        if !(1..=30 * 86_400).contains(&deadline) {
            return Err(invalid(format!(
                "stage {n}: confirm_deadline_s must be 1-2592000"
            )));
        }
        let ratio = s.max_reset_ratio.unwrap_or(DEFAULT_MAX_RESET_RATIO);
        if !(ratio.is_finite() && (ratio == 0.0 || (1.0..=1000.0).contains(&ratio))) {
            return Err(invalid(format!(
                "stage {n}: max_reset_ratio must be 0 (off) or 1-1000"
            )));
        }
        let hours = s.min_device_hours.unwrap_or(DEFAULT_MIN_DEVICE_HOURS);
        if !(hours.is_finite() && (0.0..=1_000_000.0).contains(&hours)) {
            return Err(invalid(format!(
                "stage {n}: min_device_hours must be 0-1000000"
            )));
        }
        let plan = StagePlan {
            size,
            bake_s,
            gate: HealthGate {
                min_sample: s.min_sample.unwrap_or(DEFAULT_MIN_SAMPLE),
                max_failure_ppm: (rate * 1e6).round() as u32,
                confirm_deadline_s: deadline,
                max_reset_ratio_pct: (ratio * 100.0).round() as u32,
                min_device_s: (hours * 3600.0).round() as u64,
            },
            auto_advance: s.auto_advance.unwrap_or(true),
        };
        if let Some(prev) = out.last() {
            let grows = match (prev.size, plan.size) {
                (StageSize::BasisPoints(a), StageSize::BasisPoints(b)) => b > a,
                (StageSize::Devices(a), StageSize::Devices(b)) => b > a,
                // Mixed kinds are allowed; growth is checked against the targets at run time.
                _ => true,
            };
            if !grows {
                return Err(invalid(format!("stage {n} must be larger than stage {i}")));
            }
        }
        out.push(plan);
    }
    Ok(out)
}

/// Which devices a rollout targets, beyond the release's model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Devices must have every one of these tags (at most 16).
    #[serde(default)]
    #[schema(value_type = Vec<crate::domain::schemas::TagName>, max_items = 16)]
    pub tags: Vec<String>,
    /// Running at least this version.
    #[schema(value_type = Option<fota_protocol::ImageVersion>)]
    pub version_min: Option<String>,
    /// Running at most this version.
    #[schema(value_type = Option<fota_protocol::ImageVersion>)]
    pub version_max: Option<String>,
}

impl Selector {
    /// Check names and versions; returns the version bounds parsed.
    pub fn validate(&self) -> Result<(Option<ImageVersion>, Option<ImageVersion>), PlanError> {
        if self.tags.len() > MAX_SELECTOR_TAGS {
            return Err(PlanError::Selector(format!(
                "a selector has at most {MAX_SELECTOR_TAGS} tags, not {}",
                self.tags.len()
            )));
        }
        for t in &self.tags {
            names::tag(t)?;
        }
        let parse = |v: &Option<String>| -> Result<Option<ImageVersion>, PlanError> {
            v.as_deref()
                .map(|s| {
                    s.parse()
                        .map_err(|_| PlanError::Selector(format!("invalid version {s:?}")))
                })
                .transpose()
        };
        let (min, max) = (parse(&self.version_min)?, parse(&self.version_max)?);
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                return Err(PlanError::Selector(
                    "version_min is above version_max".to_string(),
                ));
            }
        }
        Ok((min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_one_ten_fifty_hundred() {
        let plan = parse_stages(&default_stages()).unwrap();
        let sizes: Vec<_> = plan.iter().map(|s| s.size).collect();
        assert_eq!(
            sizes,
            [100, 1000, 5000, 10_000]
                .map(StageSize::BasisPoints)
                .to_vec()
        );
        assert!(plan
            .iter()
            .all(|s| s.auto_advance && s.gate.min_sample == 20));
        assert_eq!(plan[0].gate.max_failure_ppm, 50_000);
    }

    #[test]
    fn bad_plans_are_refused_with_reasons() {
        let p = |percent: f64| StageSpec {
            percent: Some(percent),
            ..Default::default()
        };
        let cases: Vec<Vec<StageSpec>> = vec![
            vec![],
            vec![p(0.0)],
            vec![p(101.0)],
            vec![p(f64::NAN)],
            vec![p(10.0), p(5.0)],
            vec![StageSpec {
                percent: Some(1.0),
                devices: Some(5),
                ..Default::default()
            }],
            vec![StageSpec::default()],
            vec![StageSpec {
                devices: Some(0),
                ..Default::default()
            }],
            vec![StageSpec {
                percent: Some(1.0),
                max_failure_rate: Some(1.5),
                ..Default::default()
            }],
            vec![StageSpec {
                percent: Some(1.0),
                confirm_deadline_s: Some(0),
                ..Default::default()
            }],
            vec![StageSpec {
                percent: Some(1.0),
                bake_s: Some(-1),
                ..Default::default()
            }],
            (0..21).map(|i| p(f64::from(i + 1))).collect(),
        ];
        for c in cases {
            assert_eq!(
                parse_stages(&c).unwrap_err().code(),
                "invalid_plan",
                "{c:?}"
            );
        }
        let counts = parse_stages(&[
            StageSpec {
                devices: Some(10),
                ..Default::default()
            },
            StageSpec {
                devices: Some(100),
                ..Default::default()
            },
            p(100.0),
        ])
        .unwrap();
        assert_eq!(counts[0].size, StageSize::Devices(10));
    }

    #[test]
    fn selectors_validate() {
        let s = Selector {
            tags: vec!["city:a".into()],
            version_min: Some("1.0.0".into()),
            version_max: Some("2.0.0".into()),
        };
        assert!(s.validate().is_ok());
        let inverted = Selector {
            version_min: Some("2.0.0".into()),
            version_max: Some("1.0.0".into()),
            ..Default::default()
        };
        assert_eq!(inverted.validate().unwrap_err().code(), "invalid_selector");
        let bad_tag = Selector {
            tags: vec!["a b".into()],
            ..Default::default()
        };
        assert_eq!(bad_tag.validate().unwrap_err().code(), "invalid_tag");
    }
}
