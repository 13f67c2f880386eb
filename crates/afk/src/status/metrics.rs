//! afk's Prometheus metrics (`GET /metrics`, OpenMetrics text through `prometheus-client`). Names
//! follow Prometheus' conventions: `afk_` prefix, counters end in `_total`, durations are
//! `_seconds`. docs/api.md lists them.
//!
//! Counters and histograms are fed as things happen (the recorder's transitions, each tick, each
//! request to T3 or GitHub); the ledger's gauges (jobs by state, rows per table) are read from
//! the ledger at each scrape, so they are true whichever replica is scraped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use afk_core::{AttemptChange, JobState, Transition};
use afk_ledger::{Job, LedgerSize};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

/// How a request to T3 or GitHub ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A 2xx or 3xx answer.
    Ok,
    /// A 4xx answer.
    ClientError,
    /// A 5xx answer.
    ServerError,
    /// No answer: refused, timed out, cut off.
    Unreachable,
}

impl RequestOutcome {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: u16) -> RequestOutcome {
        match status {
            400..=499 => RequestOutcome::ClientError,
            500.. => RequestOutcome::ServerError,
            _ => RequestOutcome::Ok,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::ClientError => "client_error",
            RequestOutcome::ServerError => "server_error",
            RequestOutcome::Unreachable => "unreachable",
        }
    }
}

/// afk's metrics: one registry per process (each [`crate::app::App`] has its own).
pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    attempts_started: Counter,
    attempts_finished: Family<OutcomeLabel, Counter>,
    dispatch_latency: Histogram,
    tick_duration: Histogram,
    ticks: Family<OutcomeLabel, Counter>,
    t3_requests: Family<OutcomeLabel, Counter>,
    github_requests: Family<OutcomeLabel, Counter>,
    stream: Family<StateLabel, Gauge>,
    leader: Gauge,
    ledger_rows: Family<TableLabel, Gauge>,
    /// When each job being dispatched became ready (queued, or its back-off due): the start of its
    /// dispatch latency. Only jobs between their attempt's start and T3 accepting it.
    ready_since: Mutex<HashMap<i64, DateTime<Utc>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("afk");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs in the ledger, by state", jobs.clone());
        let attempts_started = Counter::default();
        registry.register(
            "attempts_started",
            "Attempts started (one T3 thread each) by this process",
            attempts_started.clone(),
        );
        let attempts_finished = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "attempts_finished",
            "Attempts that ended, by outcome (the attempt's final state)",
            attempts_finished.clone(),
        );
        // 10 ms .. about 5.8 h.
        let dispatch_latency = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        registry.register_with_unit(
            "dispatch_latency",
            "From a job becoming ready (queued, or its back-off due) to T3 accepting its attempt",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        // 1 ms .. about 65 s.
        let tick_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "tick_duration",
            "How long one pass of the control loop took",
            Unit::Seconds,
            tick_duration.clone(),
        );
        let ticks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "ticks",
            "Passes of the control loop, by outcome (ok, t3_unreachable, ledger_error)",
            ticks.clone(),
        );
        let t3_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "t3_requests",
            "HTTP requests to T3, by outcome (ok, client_error, server_error, unreachable)",
            t3_requests.clone(),
        );
        let github_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "github_requests",
            "Requests to GitHub's API, by outcome (ok, client_error, server_error, unreachable)",
            github_requests.clone(),
        );
        let stream = Family::<StateLabel, Gauge>::default();
        registry.register(
            "t3_stream",
            "T3's shell stream at the last tick: 1 for the state it is in (following, polling, off)",
            stream.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process leads the ledger, 0 while it stands by",
            leader.clone(),
        );
        let ledger_rows = Family::<TableLabel, Gauge>::default();
        registry.register(
            "ledger_rows",
            "Rows in the ledger, by table (jobs, attempts, events)",
            ledger_rows.clone(),
        );
        for outcome in ["ok", "client_error", "server_error", "unreachable"] {
            let label = OutcomeLabel {
                outcome: outcome.into(),
            };
            let _ = t3_requests.get_or_create(&label);
            let _ = github_requests.get_or_create(&label);
        }
        for state in ["following", "polling", "off"] {
            let _ = stream.get_or_create(&StateLabel { state: state.into() });
        }
        Metrics {
            registry,
            jobs,
            attempts_started,
            attempts_finished,
            dispatch_latency,
            tick_duration,
            ticks,
            t3_requests,
            github_requests,
            stream,
            leader,
            ledger_rows,
            ready_since: Mutex::new(HashMap::new()),
        }
    }

    /// The registry as Prometheus' text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Notes a transition the recorder recorded for `job` (as it was before) at `now`.
    pub fn transition(&self, job: &Job, transition: &Transition, now: DateTime<Utc>) {
        let mut ready = self.ready_since.lock().unwrap_or_else(|p| p.into_inner());
        match &transition.attempt {
            Some(AttemptChange::Start { .. }) => {
                self.attempts_started.inc();
                let since = match job.not_before {
                    Some(due) if due > job.updated_at => due,
                    _ => job.updated_at,
                };
                ready.insert(job.id.0, since.min(now));
            }
            Some(AttemptChange::Running) => {
                if let Some(since) = ready.remove(&job.id.0) {
                    let seconds = (now - since).num_milliseconds().max(0) as f64 / 1000.0;
                    self.dispatch_latency.observe(seconds);
                }
            }
            Some(AttemptChange::End { state, .. }) => {
                ready.remove(&job.id.0);
                self.attempts_finished
                    .get_or_create(&OutcomeLabel {
                        outcome: state.to_string(),
                    })
                    .inc();
            }
            Some(AttemptChange::DispatchRetry { .. } | AttemptChange::FollowUp { .. }) | None => {}
        }
    }

    /// Notes a tick that went through.
    pub fn tick(&self, took: Duration, t3_reachable: bool, streaming: Option<bool>) {
        self.tick_duration.observe(took.as_secs_f64());
        let outcome = if t3_reachable { "ok" } else { "t3_unreachable" };
        self.ticks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        let current = match streaming {
            Some(true) => "following",
            Some(false) => "polling",
            None => "off",
        };
        for state in ["following", "polling", "off"] {
            self.stream
                .get_or_create(&StateLabel { state: state.into() })
                .set(i64::from(state == current));
        }
    }

    /// Notes a tick that failed on the ledger.
    pub fn tick_failed(&self, took: Duration) {
        self.tick_duration.observe(took.as_secs_f64());
        self.ticks
            .get_or_create(&OutcomeLabel {
                outcome: "ledger_error".into(),
            })
            .inc();
    }

    /// Notes a request to T3 that ended so.
    pub fn t3_request(&self, outcome: RequestOutcome) {
        self.t3_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// Notes a request to GitHub that ended so.
    pub fn github_request(&self, outcome: RequestOutcome) {
        self.github_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// Says whether this process leads the ledger.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets the ledger's gauges from a fresh read.
    pub fn observe_ledger(&self, counts: &[(JobState, u64)], size: &LedgerSize) {
        for (state, n) in counts {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for (table, n) in [
            ("jobs", size.jobs),
            ("attempts", size.attempts),
            ("events", size.events),
        ] {
            self.ledger_rows
                .get_or_create(&TableLabel { table: table.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
