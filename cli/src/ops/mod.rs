//! Operator commands over the admin HTTP API: `fota release`, `fota rollout`, `fota rollback`,
//! `fota devices` and `fota audit`.
//!
//! - [`client`]: the HTTP client every command shares (`--server`, `--token`), and how failures
//!   become one line: `error: <message> (<code>)` for the server's refusals, `error: cannot reach
//!   <url>: <cause>` when there is no server to talk to.
//! - [`format`]: tables, times, percentages and durations for people.
//! - [`release`], [`rollout`] (with `rollback`), [`devices`], [`audit`]: one module per resource.
//!
//! Every listing and status takes `--json` and then prints the server's JSON (pretty) as it came,
//! for scripts; the human output is for people and may change.

pub mod audit;
pub mod client;
pub mod devices;
pub mod format;
pub mod release;
pub mod rollout;

use std::io::Write;
use std::time::Duration;

/// Where the server is and who is asking: flattened into every operator command.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// The fota server's base URL: http://, or https:// (TLS by rustls, trusting the system's
    /// root certificates and --ca-cert).
    #[arg(
        long,
        env = "FOTA_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        value_parser = parse_server_url
    )]
    pub server: reqwest::Url,
    /// Admin token (`fota token create`).
    // Required; an `Option` only so that `fota devices` can hold it for its listing while
    // `fota devices show` brings its own.
    #[arg(
        long,
        env = "FOTA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        required = true
    )]
    pub token: Option<String>,
    /// PEM file of the certificate authority (or self-signed certificate) to trust for an
    /// https:// server, besides the system's roots.
    #[arg(long, env = "FOTA_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Print the server's JSON, pretty (`--json`).
pub fn print_json(out: &mut dyn Write, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// `--server`: an absolute http:// or https:// URL.
pub fn parse_server_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("'{s}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "'{s}': expected an http:// or https:// URL, e.g. https://fota.example.com"
        ));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("'{s}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{s}': a base URL takes no query or fragment"));
    }
    Ok(url)
}

/// A duration: `500ms`, `90` (seconds), `90s`, `30m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let bad = || format!("'{s}' is not a duration (e.g. 90, 90s, 30m, 2h, 1d)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}' is too long"))
}

/// A duration in whole seconds (plan values): as [`parse_duration`], without fractions.
pub fn parse_seconds(s: &str) -> Result<i64, String> {
    let d = parse_duration(s)?;
    if d.subsec_millis() != 0 {
        return Err(format!("'{s}': give whole seconds"));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("'{s}' is too long"))
}

/// A failure rate: `5%` or the fraction `0.05`, from 0 to 100%.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("'{s}' is not a rate (e.g. 5% or 0.05)"))?;
    let rate = value / scale;
    if !(0.0..=1.0).contains(&rate) {
        return Err(if scale == 1.0 && value > 1.0 && value <= 100.0 {
            format!("'{s}' is above 1; for a percentage write {value}%")
        } else {
            format!("'{s}' is not between 0% and 100%")
        });
    }
    Ok(rate)
}

/// One cumulative stage size in percent: `10` or `10%`, in (0, 100].
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    let p: f64 = t
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("'{s}' is not a percentage"))?;
    if p <= 0.0 || p > 100.0 {
        return Err(format!("'{s}': a stage is more than 0% and at most 100%"));
    }
    Ok(p)
}

/// One cumulative stage size in devices: at least 1.
pub fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("a stage has at least 1 device".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a device count")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5x", "m", "-1s", "1.5h", "2 h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seconds("30m"), Ok(1800));
        assert!(parse_seconds("1500ms").is_err());
        assert_eq!(parse_seconds("2000ms"), Ok(2));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5%"), Ok(0.05));
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert_eq!(parse_rate("100%"), Ok(1.0));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("12.5 %"), Ok(0.125));
        let e = parse_rate("5").unwrap_err();
        assert!(e.contains("5%"), "{e}");
        for bad in ["200%", "-1%", "1.5", "x", "%", "NaN", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stage_sizes() {
        assert_eq!(parse_percent("10"), Ok(10.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
        assert_eq!(parse_count("10"), Ok(10));
        assert!(parse_count("0").is_err());
        assert!(parse_count("ten").is_err());
    }

    #[test]
    fn server_urls() {
        assert!(parse_server_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_server_url("http://fota.example/base/").is_ok());
        assert!(parse_server_url("https://fota.example").is_ok());
        assert!(parse_server_url("127.0.0.1:8080").is_err());
        assert!(parse_server_url("ftp://x")
            .unwrap_err()
            .contains("expected an http:// or https:// URL"));
        assert!(parse_server_url("http://x/?a=b").is_err());
    }
}
