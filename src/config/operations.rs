//! The operations sections of the config file: arrival expectations (`[[expect]]`),
//! alert notifications (`[alerts]`) and shutdown.

use super::ConfigError;
use crate::core::expectation::{Expectation, RegionSet, parse_days};
use chrono::NaiveTime;
use serde::Deserialize;
use std::time::Duration;

/// `[[expect]]`: when a region's files must have arrived.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSection {
    /// Region codes; left out: every region that has sent a file.
    pub regions: Option<Vec<String>>,
    /// Days (`Mon`..`Sun`, `weekdays`, `weekends`, `daily`); default `weekdays`.
    pub days: Option<Vec<String>>,
    /// Local deadline, `HH:MM`.
    pub by: String,
    /// IANA time zone of `by`; default `UTC`.
    pub timezone: Option<String>,
}

impl ExpectSection {
    pub fn expectation(&self, index: usize) -> Result<Expectation, ConfigError> {
        let at = |m: String| ConfigError(format!("expect[{index}]: {m}"));
        let by = NaiveTime::parse_from_str(self.by.trim(), "%H:%M")
            .map_err(|_| at(format!("by = {:?} is not a time of day (HH:MM)", self.by)))?;
        let days = parse_days(self.days.as_deref().unwrap_or(&["weekdays".to_string()])).map_err(at)?;
        let zone = self.timezone.as_deref().unwrap_or("UTC");
        let timezone = zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| at(format!("timezone {zone:?} is not an IANA time zone (e.g. Europe/London)")))?;
        let regions = match &self.regions {
            None => RegionSet::Seen,
            Some(list) if list.is_empty() => return Err(at("regions is empty; leave it out for every region".into())),
            Some(list) => RegionSet::Named(list.iter().map(|r| r.trim().to_string()).collect()),
        };
        Ok(Expectation { regions, days, by, timezone })
    }
}

/// Every `[[expect]]` entry, named regions first so they win over a catch-all.
pub fn expectations(sections: &[ExpectSection]) -> Result<Vec<Expectation>, ConfigError> {
    let mut all = sections.iter().enumerate().map(|(i, s)| s.expectation(i)).collect::<Result<Vec<_>, _>>()?;
    all.sort_by_key(|e| matches!(e.regions, RegionSet::Seen));
    Ok(all)
}

/// `[alerts]`: where alert transitions are sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// A Slack-compatible incoming webhook (`{"text": ...}` is posted).
    pub webhook_url: Option<String>,
    /// How long one notification is retried before it is given up (logged); default 1h.
    #[serde(default, with = "humantime_serde")]
    pub give_up_after: Option<Duration>,
}

/// The notifier settings, when a webhook is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    pub webhook_url: String,
    pub give_up_after: Duration,
}

impl AlertsSection {
    pub fn settings(self) -> Result<Option<AlertSettings>, ConfigError> {
        let Some(url) = self.webhook_url else {
            if self.give_up_after.is_some() {
                return Err(ConfigError("alerts.give_up_after needs alerts.webhook_url".into()));
            }
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            // The URL is a credential: only its scheme is shown.
            let scheme = url.split_once("://").map_or("none", |(scheme, _)| scheme);
            return Err(ConfigError(format!(
                "alerts.webhook_url: expected an http:// or https:// URL (its scheme is {scheme:?})"
            )));
        }
        Ok(Some(AlertSettings { webhook_url: url, give_up_after: self.give_up_after.unwrap_or(DEFAULT_GIVE_UP) }))
    }
}

pub const DEFAULT_GIVE_UP: Duration = Duration::from_secs(3600);
