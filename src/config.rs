//! Configuration: a TOML file, then environment variables and flags on top, validated in
//! full before any I/O against the source or store. Unknown keys are errors.

mod operations;

pub use operations::{AlertSettings, AlertsSection, ExpectSection};

use crate::core::name::{DEFAULT_NAME_PATTERN, NameProfile};
use crate::core::schema::{Layout, Layouts};
use crate::core::sequencer::SequenceRules;
use chrono::TimeDelta;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_SOURCE: &str = "./inbox";
pub const DEFAULT_STORE: &str = "./esr-ingest.db";
pub const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_GAP_ALERT_AFTER: Duration = Duration::from_secs(26 * 3600);

/// A configuration mistake: always reported before anything runs (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub use crate::telemetry::LogFormat;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub source: Option<String>,
    pub store: Option<String>,
    pub broker: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
    /// How often a pass lists and checks every object (default 5 minutes); the passes in
    /// between look only at new names and active files (see `engine::Scope`).
    #[serde(default, with = "humantime_serde")]
    pub reconcile_interval: Option<Duration>,
    pub log_format: Option<LogFormat>,
    /// Shorthand for `[sequence] gap_alert_after`.
    #[serde(default, with = "humantime_serde")]
    pub gap_alert_after: Option<Duration>,
    #[serde(default)]
    pub profile: ProfileSection,
    #[serde(default)]
    pub sequence: SequenceSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub s3: S3Section,
    #[serde(default)]
    pub rabbitmq: RabbitSection,
    /// How long SIGTERM waits for the file in hand before abandoning it (resumable).
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// How long a region lease lasts without renewal (several instances on one store).
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    #[serde(default)]
    pub expect: Vec<ExpectSection>,
    #[serde(default)]
    pub alerts: AlertsSection,
}

/// Tuning of the RabbitMQ delivery (used with `broker`); every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSection {
    pub exchange: Option<String>,
    pub queue: Option<String>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_queue: Option<String>,
    pub delivery_limit: Option<u32>,
    pub records_per_message: Option<usize>,
    pub in_flight: Option<usize>,
    pub consumers: Option<usize>,
    pub prefetch: Option<u16>,
}

impl RabbitSection {
    fn settings(self) -> Result<crate::adapters::rabbitmq::RabbitSettings, ConfigError> {
        let d = crate::adapters::rabbitmq::RabbitSettings::default();
        let s = crate::adapters::rabbitmq::RabbitSettings {
            exchange: self.exchange.unwrap_or(d.exchange),
            queue: self.queue.unwrap_or(d.queue),
            dead_letter_exchange: self.dead_letter_exchange.unwrap_or(d.dead_letter_exchange),
            dead_letter_queue: self.dead_letter_queue.unwrap_or(d.dead_letter_queue),
            delivery_limit: self.delivery_limit.unwrap_or(d.delivery_limit),
            records_per_message: self.records_per_message.unwrap_or(d.records_per_message),
            in_flight: self.in_flight.unwrap_or(d.in_flight),
            consumers: self.consumers.unwrap_or(d.consumers),
            prefetch: self.prefetch.unwrap_or(d.prefetch),
        };
        let bad = |m: &str| Err(ConfigError(format!("rabbitmq.{m}")));
        for (key, name) in [
            ("exchange", &s.exchange),
            ("queue", &s.queue),
            ("dead_letter_exchange", &s.dead_letter_exchange),
            ("dead_letter_queue", &s.dead_letter_queue),
        ] {
            if name.is_empty() || name.len() > 255 {
                return bad(&format!("{key} must be 1 to 255 characters"));
            }
        }
        if s.delivery_limit == 0 {
            return bad("delivery_limit must be at least 1");
        }
        if !(1..=10_000).contains(&s.records_per_message) {
            return bad("records_per_message must be between 1 and 10000");
        }
        if !(1..=100_000).contains(&s.in_flight) {
            return bad("in_flight must be between 1 and 100000");
        }
        if s.prefetch == 0 {
            return bad("prefetch must be at least 1");
        }
        if s.consumers > 64 {
            return bad("consumers must be at most 64");
        }
        Ok(s)
    }
}

/// How to reach S3 for an `s3://` source. Credentials come from the standard AWS chain.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// A custom endpoint (an S3-compatible server); default: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Default: the AWS chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    #[serde(default)]
    pub force_path_style: bool,
    /// An AMQP queue of S3 event notifications: a new object starts a pass at once.
    pub events_queue: Option<String>,
    /// The exchange the notifications are published to (bound to `events_queue`).
    pub events_exchange: Option<String>,
    /// The routing key of that binding (default: empty).
    pub events_routing_key: Option<String>,
    /// The broker carrying the notifications (default: `broker`).
    pub events_url: Option<String>,
    /// With events, the full listing still runs this often (default 5 minutes).
    #[serde(default, with = "humantime_serde")]
    pub reconcile_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    pub name_pattern: Option<String>,
    pub layout: Option<PathBuf>,
    /// A layout per file kind (`RMC = "schemas/x.toml"`); other kinds use `layout`.
    #[serde(default)]
    pub layouts: BTreeMap<String, PathBuf>,
    /// File kinds that are full files, and what applying one does to the records it does
    /// not contain (`tombstone`, `report`, `off`); default `{ RMF = "tombstone" }`.
    pub full_files: Option<BTreeMap<String, crate::core::full::FullFileMode>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSection {
    #[serde(default, with = "humantime_serde")]
    pub gap_alert_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub auto_skip_after: Option<Duration>,
    #[serde(default)]
    pub start: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub listen: Option<SocketAddr>,
}

/// Where the files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    Folder(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Where state and records are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(PathBuf),
    Mongo(String),
}

/// Overrides from flags and environment (highest precedence).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub source: Option<String>,
    pub store: Option<String>,
    pub broker: Option<String>,
    pub log_format: Option<LogFormat>,
    /// `ESR_INGEST_WEBHOOK_URL`: the alert webhook (a credential, kept out of the file).
    pub webhook_url: Option<String>,
}

/// The validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub source: SourceSpec,
    pub store: StoreSpec,
    pub broker: Option<String>,
    pub poll_interval: Duration,
    pub log_format: LogFormat,
    pub profile: NameProfile,
    /// The record layouts, per file kind.
    pub layouts: Layouts,
    pub full_files: crate::core::full::FullFileKinds,
    pub rules: SequenceRules,
    pub health_listen: SocketAddr,
    pub s3: crate::adapters::s3::S3Settings,
    pub rabbitmq: crate::adapters::rabbitmq::RabbitSettings,
    /// S3 event notifications, when configured.
    pub s3_events: Option<crate::adapters::s3_events::EventSettings>,
    /// How often a pass runs without being woken: `poll_interval`, or with events the
    /// `reconcile_interval`.
    pub pass_interval: Duration,
    /// How often a pass is a full one (every object listed and checked).
    pub reconcile_interval: Duration,
    /// Arrival expectations per region (`[[expect]]`), named regions first.
    pub expectations: Vec<crate::core::expectation::Expectation>,
    /// The alert webhook, when configured.
    pub alerts: Option<AlertSettings>,
    pub shutdown_timeout: Duration,
    pub lease_ttl: Duration,
}

impl Settings {
    /// What `status` and the health server judge streams by.
    pub fn status_rules(&self) -> crate::engine::status::StatusRules {
        crate::engine::status::StatusRules { sequence: self.rules.clone(), expectations: self.expectations.clone() }
    }

    /// Loads the config file (if any) and applies the overrides.
    pub fn load(config: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?;
                // Before parsing: a parse error quotes the line it stopped at.
                crate::secrets::register_urls_in(&text);
                toml::from_str::<ConfigFile>(&text)
                    .map_err(|e| ConfigError(format!("config {}: {}", path.display(), one_line(&e.to_string()))))?
            }
            None => ConfigFile::default(),
        };
        Self::from_file(file, overrides)
    }

    pub fn from_file(file: ConfigFile, o: Overrides) -> Result<Self, ConfigError> {
        // Secrets are known before any message can quote them.
        for url in [&o.source, &file.source, &o.store, &file.store, &o.broker, &file.broker]
            .into_iter()
            .chain([&o.webhook_url, &file.alerts.webhook_url, &file.s3.events_url])
            .flatten()
        {
            crate::secrets::register_url(url);
        }
        let err = |m: String| Err(ConfigError(m));
        let source = parse_source(o.source.or(file.source).as_deref().unwrap_or(DEFAULT_SOURCE))?;
        let store = parse_store(o.store.or(file.store).as_deref().unwrap_or(DEFAULT_STORE))?;
        let broker = o.broker.or(file.broker);
        if let Some(b) = &broker
            && !(b.starts_with("amqp://") || b.starts_with("amqps://"))
        {
            return err(format!("broker {:?}: expected an amqp:// or amqps:// URL", crate::adapters::redact_url(b)));
        }
        let poll_interval = file.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
        if poll_interval.is_zero() {
            return err("poll_interval must be greater than 0".into());
        }
        let pattern = file.profile.name_pattern.as_deref().unwrap_or(DEFAULT_NAME_PATTERN);
        let profile = NameProfile::new(pattern).map_err(|e| ConfigError(format!("profile.{e}")))?;
        let read_layout = |key: &str, path: &PathBuf| -> Result<Arc<Layout>, ConfigError> {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{key} {}: {e}", path.display())))?;
            let layout = Layout::from_toml(&text)
                .map_err(|e| ConfigError(format!("{key} {}: {}", path.display(), one_line(&e.to_string()))))?;
            Ok(Arc::new(layout))
        };
        let default_layout = match &file.profile.layout {
            None => Arc::new(Layout::default_esr()),
            Some(path) => read_layout("profile.layout", path)?,
        };
        let mut by_kind = BTreeMap::new();
        for (kind, path) in &file.profile.layouts {
            by_kind.insert(kind.clone(), read_layout(&format!("profile.layouts.{kind}"), path)?);
        }
        let layouts = Layouts { default: default_layout, by_kind };
        let gap_alert_after = match (file.gap_alert_after, file.sequence.gap_alert_after) {
            (Some(_), Some(_)) => {
                return err("gap_alert_after is set twice (top level and [sequence]); keep one".into());
            }
            (a, b) => a.or(b).unwrap_or(DEFAULT_GAP_ALERT_AFTER),
        };
        let delta =
            |name: &str, d: Duration| TimeDelta::from_std(d).map_err(|_| ConfigError(format!("{name} is too large")));
        for (region, seq) in &file.sequence.start {
            if *seq == 0 || *seq > crate::core::name::MAX_SEQ {
                return err(format!("sequence.start.{region} must be between 1 and {}", crate::core::name::MAX_SEQ));
            }
        }
        let rules = SequenceRules {
            gap_alert_after: delta("gap_alert_after", gap_alert_after)?,
            auto_skip_after: file.sequence.auto_skip_after.map(|d| delta("auto_skip_after", d)).transpose()?,
            start: file.sequence.start,
        };
        let rabbitmq = file.rabbitmq.settings()?;
        let s3_events = match (&file.s3.events_queue, &source) {
            (None, _) => {
                if file.s3.events_exchange.is_some() {
                    return err("s3.events_exchange needs s3.events_queue".into());
                }
                None
            }
            (Some(_), SourceSpec::Folder(_)) => return err("s3.events_queue needs an s3:// source".into()),
            (Some(queue), SourceSpec::S3 { bucket, prefix }) => {
                let Some(url) = file.s3.events_url.clone().or_else(|| broker.clone()) else {
                    return err("s3.events_queue needs a broker: set broker (or s3.events_url)".into());
                };
                Some(crate::adapters::s3_events::EventSettings {
                    url,
                    queue: queue.clone(),
                    exchange: file.s3.events_exchange.clone(),
                    routing_key: file.s3.events_routing_key.clone().unwrap_or_default(),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                })
            }
        };
        let reconcile_interval = match (file.reconcile_interval, file.s3.reconcile_interval) {
            (Some(_), Some(_)) => {
                return err("reconcile_interval is set twice (top level and [s3]); keep one".into());
            }
            (a, b) => a.or(b).unwrap_or(DEFAULT_RECONCILE_INTERVAL),
        };
        if reconcile_interval.is_zero() {
            return err("reconcile_interval must be greater than 0".into());
        }
        let pass_interval = match &s3_events {
            Some(_) => reconcile_interval,
            None => poll_interval,
        };
        let shutdown_timeout = file.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        if shutdown_timeout.is_zero() {
            return err("shutdown_timeout must be greater than 0".into());
        }
        let lease_ttl = file.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        if lease_ttl < Duration::from_secs(1) {
            return err("lease_ttl must be at least 1s".into());
        }
        Ok(Settings {
            lease_ttl,
            expectations: operations::expectations(&file.expect)?,
            alerts: AlertsSection { webhook_url: o.webhook_url.or(file.alerts.webhook_url), ..file.alerts }
                .settings()?,
            shutdown_timeout,
            rabbitmq,
            s3_events,
            pass_interval,
            reconcile_interval,
            source,
            store,
            broker,
            poll_interval,
            log_format: o.log_format.or(file.log_format).unwrap_or_default(),
            profile,
            layouts,
            full_files: file
                .profile
                .full_files
                .clone()
                .map_or_else(crate::core::full::FullFileKinds::default, crate::core::full::FullFileKinds),
            rules,
            s3: crate::adapters::s3::S3Settings {
                endpoint: file.s3.endpoint,
                region: file.s3.region,
                force_path_style: file.s3.force_path_style,
            },
            health_listen: file.health.listen.unwrap_or_else(|| {
                // A constant address that the unit tests parse.
                DEFAULT_HEALTH_LISTEN.parse().expect("valid default address")
            }),
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_source(s: &str) -> Result<SourceSpec, ConfigError> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError(format!(
                "source {:?}: the bucket is missing (s3://bucket/prefix)",
                crate::adapters::redact_url(s)
            )));
        }
        return Ok(SourceSpec::S3 { bucket: bucket.into(), prefix: prefix.into() });
    }
    if s.contains("://") {
        return Err(ConfigError(format!(
            "source {:?}: expected a directory path or s3://bucket/prefix",
            crate::adapters::redact_url(s)
        )));
    }
    if s.is_empty() {
        return Err(ConfigError("source is empty".into()));
    }
    Ok(SourceSpec::Folder(PathBuf::from(s)))
}

fn parse_store(s: &str) -> Result<StoreSpec, ConfigError> {
    if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
        return Ok(StoreSpec::Mongo(s.into()));
    }
    if s.contains("://") {
        return Err(ConfigError(format!(
            "store {:?}: expected a SQLite file path or a mongodb:// URI",
            crate::adapters::redact_url(s)
        )));
    }
    if s.is_empty() {
        return Err(ConfigError("store is empty".into()));
    }
    Ok(StoreSpec::Sqlite(PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str) -> Result<Settings, ConfigError> {
        let file: ConfigFile = toml::from_str(toml_text).map_err(|e| ConfigError(e.to_string()))?;
        Settings::from_file(file, Overrides::default())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load("").unwrap();
        assert_eq!(s.source, SourceSpec::Folder("./inbox".into()));
        assert_eq!(s.store, StoreSpec::Sqlite("./esr-ingest.db".into()));
        assert_eq!(s.broker, None);
        assert_eq!(s.health_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.rules.gap_alert_after, TimeDelta::hours(26));
        assert_eq!(s.poll_interval, Duration::from_secs(10));
    }

    #[test]
    fn the_reconcile_interval_is_one_setting_with_two_spellings() {
        let s = load("").unwrap();
        assert_eq!((s.reconcile_interval, s.pass_interval), (Duration::from_secs(300), Duration::from_secs(10)));
        let s = load("reconcile_interval = \"1m\"").unwrap();
        assert_eq!(s.reconcile_interval, Duration::from_secs(60));
        let events = "source = \"s3://b/in\"\nbroker = \"amqp://h\"\n[s3]\nevents_queue = \"q\"\n";
        let s = load(&format!("{events}reconcile_interval = \"2m\"")).unwrap();
        assert_eq!((s.reconcile_interval, s.pass_interval), (Duration::from_secs(120), Duration::from_secs(120)));
        let twice = format!("reconcile_interval = \"1m\"\n{events}reconcile_interval = \"2m\"");
        assert!(load(&twice).unwrap_err().0.contains("set twice"));
        assert!(load("reconcile_interval = \"0s\"").unwrap_err().0.contains("greater than 0"));
    }

    #[test]
    fn reads_every_section() {
        let s = load(
            "source = \"s3://bucket/in\"\nstore = \"mongodb://localhost\"\npoll_interval = \"2s\"\n\
             [sequence]\ngap_alert_after = \"1h\"\nauto_skip_after = \"2d\"\n[sequence.start]\nSEV = 1157\n\
             [health]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        assert_eq!(s.source, SourceSpec::S3 { bucket: "bucket".into(), prefix: "in".into() });
        assert_eq!(s.rules.start.get("SEV"), Some(&1157));
        assert_eq!(s.rules.auto_skip_after, Some(TimeDelta::days(2)));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(load("sorce = \"x\"").unwrap_err().0.contains("sorce"));
        assert!(load("poll_interval = \"0s\"").unwrap_err().0.contains("poll_interval"));
        assert!(load("broker = \"http://x\"").unwrap_err().0.contains("amqp"));
        assert!(load("[profile]\nname_pattern = \"(?P<region>x)\"").unwrap_err().0.contains("kind"));
        assert!(load("gap_alert_after = \"1h\"\n[sequence]\ngap_alert_after = \"2h\"").is_err());
        assert!(load("[sequence.start]\nSEV = 0").is_err());
        assert!(load("[[expect]]\nby = \"25:00\"").unwrap_err().0.contains("expect[0]: by"));
        assert!(load("[[expect]]\nby = \"14:30\"\ntimezone = \"Mars/Olympus\"").unwrap_err().0.contains("Mars"));
        assert!(load("[[expect]]\nby = \"14:30\"\ndays = [\"Funday\"]").unwrap_err().0.contains("Funday"));
        assert!(load("[alerts]\nwebhook_url = \"ftp://x\"").unwrap_err().0.contains("webhook_url"));
        assert!(load("shutdown_timeout = \"0s\"").unwrap_err().0.contains("shutdown_timeout"));
    }

    #[test]
    fn expectations_put_named_regions_before_the_catch_all() {
        let s = load(
            "[[expect]]\nby = \"09:00\"\n[[expect]]\nregions = [\"SEV\"]\nby = \"14:30\"\n\
             timezone = \"Europe/London\"\ndays = [\"Mon\", \"Wed\"]\n",
        )
        .unwrap();
        let sev = crate::core::expectation::for_region(&s.expectations, "SEV").unwrap();
        assert_eq!(sev.by, chrono::NaiveTime::from_hms_opt(14, 30, 0).unwrap());
        assert_eq!(sev.days, vec![chrono::Weekday::Mon, chrono::Weekday::Wed]);
        let wes = crate::core::expectation::for_region(&s.expectations, "WES").unwrap();
        assert_eq!(wes.by, chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert_eq!(s.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    }
}
