//! What cloud tokens cost: `data/prices.toml` (USD per 1M input and output tokens, by provider
//! and model, built in), overridden by the inventory's `routing.prices`. A model with no price
//! is `None`, never 0: the gateway warns, and cannot count that spend against a cap.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::gateway::providers::Usage;
use crate::spec::inventory::PriceOverride;

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per 1M input (prompt) tokens.
    pub input: f64,
    /// Per 1M output (completion) tokens.
    pub output: f64,
}

/// Where a price comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// `data/prices.toml`.
    Builtin,
    /// The inventory's `routing.prices`.
    Inventory,
}

/// Prices by provider and model.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: BTreeMap<(String, String), (Price, PriceSource)>,
}

const BUILTIN: &str = include_str!("../../data/prices.toml");

static BUILTIN_TABLE: LazyLock<Result<PriceTable, String>> = LazyLock::new(|| parse(BUILTIN));

fn parse(text: &str) -> Result<PriceTable, String> {
    let raw: BTreeMap<String, BTreeMap<String, Price>> =
        toml::from_str(text).map_err(|e| format!("data/prices.toml: {e}"))?;
    let mut table = PriceTable::default();
    for (provider, models) in raw {
        for (model, price) in models {
            if !(price.input.is_finite()
                && price.output.is_finite()
                && price.input >= 0.0
                && price.output >= 0.0)
            {
                return Err(format!(
                    "data/prices.toml: `{provider}/{model}`: prices must be numbers ≥ 0"
                ));
            }
            table
                .prices
                .insert((provider.clone(), model), (price, PriceSource::Builtin));
        }
    }
    Ok(table)
}

impl PriceTable {
    /// The built-in table (`data/prices.toml`).
    pub fn builtin() -> Result<PriceTable, String> {
        BUILTIN_TABLE.clone()
    }

    /// The built-in table with the inventory's prices over it.
    pub fn with_overrides(overrides: &[PriceOverride]) -> Result<PriceTable, String> {
        let mut t = PriceTable::builtin()?;
        for o in overrides {
            t.prices.insert(
                (o.provider.clone(), o.model.clone()),
                (
                    Price {
                        input: o.input,
                        output: o.output,
                    },
                    PriceSource::Inventory,
                ),
            );
        }
        Ok(t)
    }

    /// The price of `provider`'s `model`, and where it comes from; `None` when unknown.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<(Price, PriceSource)> {
        self.prices
            .get(&(provider.to_string(), model.to_string()))
            .copied()
    }

    /// The price of `provider`'s `model`; `None` when unknown.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.lookup(provider, model).map(|(p, _)| p)
    }
}

/// What `usage` costs at `price`, in USD.
pub fn cost_usd(usage: Usage, price: Price) -> f64 {
    (usage.prompt_tokens as f64 * price.input + usage.completion_tokens as f64 * price.output)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Loc;

    #[test]
    fn the_builtin_table_parses_and_knows_each_providers_example_model() {
        let t = PriceTable::builtin().expect("data/prices.toml parses");
        for p in crate::spec::inventory::PROVIDERS {
            let m = crate::spec::inventory::provider_example_model(p);
            // `fleet init`'s example models: every one but the placeholders has a price.
            if matches!(m, "claude-haiku" | "openrouter/auto") {
                assert_eq!(t.price(p, m), None, "{p}/{m}");
            } else {
                assert!(t.price(p, m).is_some(), "{p}/{m} has no price");
            }
        }
        assert_eq!(
            t.lookup("openai", "gpt-4o-mini"),
            Some((
                Price {
                    input: 0.15,
                    output: 0.60
                },
                PriceSource::Builtin
            ))
        );
        // Unknown is explicit, never 0.
        assert_eq!(t.price("openai", "gpt-unknown"), None);
        assert_eq!(t.price("mistral", "gpt-4o-mini"), None);
    }

    #[test]
    fn inventory_prices_override_and_add() {
        let o = |provider: &str, model: &str, input: f64, output: f64| PriceOverride {
            provider: provider.into(),
            model: model.into(),
            input,
            output,
            loc: Loc::file_start(&std::sync::Arc::from("inv.yaml")),
        };
        let t = PriceTable::with_overrides(&[
            o("openai", "gpt-4o-mini", 0.1, 0.2),
            o("local-vllm", "qwen/qwen3", 0.0, 0.0),
        ])
        .expect("table");
        assert_eq!(
            t.lookup("openai", "gpt-4o-mini"),
            Some((
                Price {
                    input: 0.1,
                    output: 0.2
                },
                PriceSource::Inventory
            ))
        );
        assert_eq!(
            t.price("local-vllm", "qwen/qwen3"),
            Some(Price {
                input: 0.0,
                output: 0.0
            })
        );
        assert!(t.price("openai", "gpt-4o").is_some());
    }

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        };
        let c = cost_usd(
            u,
            Price {
                input: 0.15,
                output: 0.60,
            },
        );
        assert!((c - 0.45).abs() < 1e-12, "{c}");
        let small = cost_usd(
            Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
            },
            Price {
                input: 3.0,
                output: 15.0,
            },
        );
        assert!((small - 0.000_141).abs() < 1e-12, "{small}");
        assert!(parse("[x]\n\"m\" = { input = -1.0, output = 1.0 }\n").is_err());
        assert!(parse("[x]\n\"m\" = { input = 1.0 }\n").is_err());
    }
}
