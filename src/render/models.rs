//! How much memory a model needs, from `data/models.toml` or estimated from its tag.

use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Table {
    estimate: Estimate,
    models: BTreeMap<String, f64>,
}

#[derive(serde::Deserialize)]
struct Estimate {
    gb_per_billion: f64,
    overhead_gb: f64,
}

fn table() -> Option<&'static Table> {
    static T: OnceLock<Option<Table>> = OnceLock::new();
    T.get_or_init(|| toml::from_str(include_str!("../../data/models.toml")).ok())
        .as_ref()
}

/// Memory in GB the model needs, or `None` when neither listed nor sized by its tag.
pub fn required_gb(model: &str) -> Option<f64> {
    let t = table()?;
    if let Some(gb) = t.models.get(model) {
        return Some(*gb);
    }
    let tag = model.rsplit_once(':').map(|(_, tag)| tag)?;
    let size = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    let billions =
        if let Some((experts, each)) = size.strip_suffix('b').and_then(|s| s.split_once('x')) {
            experts.parse::<f64>().ok()? * each.parse::<f64>().ok()? * 0.8
        } else if let Some(b) = size.strip_suffix('b') {
            b.parse::<f64>().ok()?
        } else if let Some(m) = size.strip_suffix('m') {
            m.parse::<f64>().ok()? / 1000.0
        } else {
            return None;
        };
    let gb = billions * t.estimate.gb_per_billion + t.estimate.overhead_gb;
    Some((gb * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_and_estimated() {
        assert_eq!(required_gb("llama3.1:70b"), Some(48.0));
        assert_eq!(required_gb("somemodel:13b"), Some(10.0));
        assert_eq!(required_gb("tiny:360m"), Some(1.7));
        assert_eq!(required_gb("foo:latest"), None);
        assert_eq!(required_gb("nomic-embed-text"), Some(1.0));
        assert!(required_gb("data/models.toml parses").is_none());
        assert!(table().is_some(), "data/models.toml parses");
    }
}
