//! dive-style CI rules over an [`Analysis`]: lowest efficiency, highest
//! reclaimable bytes, highest user-layer waste.

use serde::Serialize;

use crate::analysis::Analysis;
use crate::render::{human_size, percent};

/// The thresholds; `None` disables a rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CiRules {
    /// Fail when the efficiency (0..=1) is below this.
    pub lowest_efficiency: Option<f64>,
    /// Fail when reclaimable bytes exceed this.
    pub highest_wasted_bytes: Option<u64>,
    /// Fail when the user layers' waste fraction (0..=1) exceeds this.
    pub highest_user_wasted_percent: Option<f64>,
}

impl Default for CiRules {
    /// dive's defaults: efficiency 0.9, user waste 0.1, wasted bytes off.
    fn default() -> Self {
        Self {
            lowest_efficiency: Some(0.9),
            highest_wasted_bytes: None,
            highest_user_wasted_percent: Some(0.1),
        }
    }
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    /// dive's rule name.
    pub rule: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// Measured against limit, for people.
    pub detail: String,
}

/// Evaluates the enabled rules, in a fixed order.
pub fn evaluate(analysis: &Analysis, rules: &CiRules) -> Vec<RuleResult> {
    let t = &analysis.totals;
    let mut results = Vec::new();
    if let Some(limit) = rules.lowest_efficiency {
        results.push(RuleResult {
            rule: "lowestEfficiency",
            passed: t.efficiency >= limit,
            detail: format!(
                "efficiency {} (minimum {})",
                percent(t.efficiency),
                percent(limit)
            ),
        });
    }
    if let Some(limit) = rules.highest_wasted_bytes {
        results.push(RuleResult {
            rule: "highestWastedBytes",
            passed: t.reclaimable_bytes <= limit,
            detail: format!(
                "reclaimable {} (maximum {})",
                human_size(t.reclaimable_bytes),
                human_size(limit)
            ),
        });
    }
    if let Some(limit) = rules.highest_user_wasted_percent {
        results.push(RuleResult {
            rule: "highestUserWastedPercent",
            passed: t.user_wasted_fraction <= limit,
            detail: format!(
                "user layers waste {} (maximum {})",
                percent(t.user_wasted_fraction),
                percent(limit)
            ),
        });
    }
    results
}

/// Parses a byte count: plain bytes or with a unit (`20MB`, `1.5GiB`, `512k`).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = value * multiplier;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("2048"), Some(2048));
        assert_eq!(parse_bytes("20MB"), Some(20_000_000));
        assert_eq!(parse_bytes("1.5 kB"), Some(1500));
        assert_eq!(parse_bytes("1MiB"), Some(1_048_576));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
    }
}
