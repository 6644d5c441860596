//! Prometheus Alertmanager's webhook payload (version "4"), as its `webhook_config` receiver
//! posts it: a notification of one alert group, with every alert of the group.
//!
//! Only what dispatch needs is required; everything else is optional, so that a payload from a
//! newer Alertmanager (more fields) or a hand-written one (fewer) is still understood.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One webhook notification.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The payload version; Alertmanager sends "4".
    #[serde(default)]
    pub version: String,
    /// The receiver's name in Alertmanager's configuration.
    #[serde(default)]
    pub receiver: String,
    /// `firing` or `resolved`, for the group as a whole.
    #[serde(default)]
    pub status: String,
    /// The group's key (the same for every notification of one group).
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out (`max_alerts`).
    #[serde(default)]
    pub truncated_alerts: u64,
    /// The labels the group is grouped by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert of the group has.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert of the group has.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's own URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    /// The alert's labels (`alertname`, `instance`, `job`...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations (`summary`, `description`...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(default)]
    pub starts_at: String,
    /// When it ended, or a zero time while it fires.
    #[serde(default)]
    pub ends_at: String,
    /// Where Prometheus shows the rule.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's fingerprint of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// Whether the alert has ended; a resolved alert runs nothing.
    pub fn is_resolved(&self) -> bool {
        self.status == "resolved"
    }

    /// The fingerprint Alertmanager gave, or (for a hand-made payload without one) a stable
    /// hash of the sorted label set, so that dedup works the same way for both.
    pub fn fingerprint(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        // FNV-1a over `name\0value\0...`: stable across runs and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.labels {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_payload() {
        let json = r#"{"receiver":"disco","status":"firing","alerts":[{"status":"firing",
            "labels":{"alertname":"Down","instance":"db1:9100"},"annotations":{"summary":"x"},
            "startsAt":"2024-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://p/graph","fingerprint":"abc"}],"groupLabels":{},
            "commonLabels":{},"commonAnnotations":{},"externalURL":"http://am","version":"4",
            "groupKey":"{}:{}","truncatedAlerts":0}"#;
        let p: Payload = serde_json::from_str(json).unwrap();
        assert_eq!(p.alerts[0].fingerprint(), "abc");
        assert_eq!(p.alerts[0].labels["instance"], "db1:9100");
        assert!(!p.alerts[0].is_resolved());
    }

    #[test]
    fn fingerprint_without_one_is_stable_and_label_based() {
        let mut a = Alert::default();
        a.labels.insert("alertname".into(), "Down".into());
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.labels.insert("instance".into(), "x".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
