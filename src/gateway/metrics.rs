//! The gateway's Prometheus metrics: requests by worker and outcome, upstream time to first
//! byte, the gateway's own overhead, tokens and spend. In-flight counts are read from
//! [`InFlight`](crate::hq::inflight::InFlight) when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::hq::inflight::InFlight;

/// Labels: the worker (node, or `cloud:<provider>`) and what came of the attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// Node or `cloud:<provider>`.
    pub worker: String,
    /// `ok`, `client_error`, `connect`, `timeout`, `status`, `broken`, `aborted`.
    pub outcome: String,
}

/// Labels: a worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// Node or `cloud:<provider>`.
    pub worker: String,
}

/// Labels: a worker and a token direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Node or `cloud:<provider>`.
    pub worker: String,
    /// `input` or `output`.
    pub direction: String,
}

/// Labels: a provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// Provider.
    pub provider: String,
}

/// Labels: the answer's status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status.
    pub status: String,
}

/// Every gateway metric.
#[derive(Debug)]
pub struct Metrics {
    /// Attempts by worker and outcome.
    pub attempts: Family<Outcome, Counter>,
    /// Requests by the status answered.
    pub requests: Family<StatusLabel, Counter>,
    /// Upstream time to first byte, by worker.
    pub upstream: Family<WorkerLabel, Histogram>,
    /// Time the gateway itself added to a request (total minus upstream time).
    pub overhead: Histogram,
    /// Tokens by worker and direction.
    pub tokens: Family<TokenLabels, Counter>,
    /// USD spent, by provider (thousandths of a cent, to keep an integer counter exact).
    pub spend_microusd: Family<ProviderLabel, Counter>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Metrics {
            attempts: Family::default(),
            requests: Family::default(),
            upstream: Family::new_with_constructor(latency_buckets),
            overhead: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
            ]),
            tokens: Family::default(),
            spend_microusd: Family::default(),
        }
    }

    /// Registers them (and the in-flight counts as they are now) for one scrape.
    pub fn register(&self, reg: &mut Registry, inflight: &InFlight) {
        reg.register(
            "fleet_gateway_attempts",
            "Upstream attempts by worker and outcome",
            self.attempts.clone(),
        );
        reg.register(
            "fleet_gateway_requests",
            "Gateway requests by the status answered",
            self.requests.clone(),
        );
        reg.register(
            "fleet_gateway_upstream_first_byte_seconds",
            "Upstream time to first byte, by worker",
            self.upstream.clone(),
        );
        reg.register(
            "fleet_gateway_overhead_seconds",
            "Time the gateway added to a request (its latency minus upstream time)",
            self.overhead.clone(),
        );
        reg.register(
            "fleet_gateway_tokens",
            "Tokens by worker and direction",
            self.tokens.clone(),
        );
        reg.register(
            "fleet_gateway_spend_microusd",
            "Cloud spend by provider, in millionths of a US dollar",
            self.spend_microusd.clone(),
        );
        let in_flight: Family<WorkerLabel, Gauge> = Family::default();
        for (worker, n) in inflight.snapshot() {
            in_flight
                .get_or_create(&WorkerLabel { worker })
                .set(i64::from(n));
        }
        reg.register(
            "fleet_gateway_in_flight",
            "Requests in flight by worker",
            in_flight,
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
