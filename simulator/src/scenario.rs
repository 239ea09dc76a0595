//! Named incident scenarios, their `name@offset+duration[:instance]` spec form and the
//! labels that tests use to score detections.

use crate::SimError;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What an incident does to an instance while it is active.
///
/// Every scenario moves one main metric ([`scenario_metric`]) well past where a sensible
/// rule set alerts, from inside its window only; the quiet baseline stays clear of
/// those thresholds at all times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// No incident: the baseline alone (useful to mark a window that must stay silent).
    Quiet,
    /// CPU pinned at 90–99 %, more batches and compilations, scheduler-yield waits up.
    CpuStorm,
    /// A blocking chain: 5–20 blocked processes, lock waits and `LCK_M_X` wait time up.
    BlockingChain,
    /// Deadlocks at 0.5–3 per second from the first scrape (none at baseline), lock
    /// waits up a little, deadlock-victim (1205) lines in the error log.
    DeadlockBurst,
    /// Page life expectancy collapses from its normal 1 000–7 000 s to 15–50 s
    /// (exponentially, τ = 10 s: under 100 s within a minute), buffer cache hit ratio
    /// dips to ~90 %, physical reads and `PAGEIOLATCH_SH` waits up ~6×.
    PleCollapse,
    /// The application database's log climbs steadily from its current 5–60 % to
    /// 95–99 % (over 10 minutes, or a third of the window if shorter) and stays there;
    /// log growths are counted and 9002 "log is full" lines logged.
    LogFull,
    /// tempdb fills: used space climbs to 96–99 % of its 8 GB (free under 5 %) over
    /// 3 minutes (or a third of the window), with 1105 allocation errors.
    TempdbPressure,
    /// Storage stalls: I/O latency per operation goes from 2–7 ms to 80–300 ms on every
    /// file (over 30 s), `PAGEIOLATCH_SH` ~8× and `WRITELOG` ~6×, 833 slow-I/O lines.
    IoStall,
    /// Application outage: batch requests drop to 5–10 % of normal at once, user
    /// connections to 15–25 %, CPU and waits down with them.
    BatchDrop,
    /// One wait type (`LCK_M_X`, `PAGEIOLATCH_SH`, `CXPACKET` or `ASYNC_NETWORK_IO`,
    /// picked per incident) accrues 6–10× its normal seconds-waited per second, with
    /// no other signature.
    WaitTimeSpike,
}

impl Scenario {
    /// Every scenario, in the order error messages list them.
    pub const ALL: [Scenario; 10] = [
        Scenario::Quiet,
        Scenario::CpuStorm,
        Scenario::BlockingChain,
        Scenario::DeadlockBurst,
        Scenario::PleCollapse,
        Scenario::LogFull,
        Scenario::TempdbPressure,
        Scenario::IoStall,
        Scenario::BatchDrop,
        Scenario::WaitTimeSpike,
    ];

    /// The snake_case name used in specs, labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Quiet => "quiet",
            Scenario::CpuStorm => "cpu_storm",
            Scenario::BlockingChain => "blocking_chain",
            Scenario::DeadlockBurst => "deadlock_burst",
            Scenario::PleCollapse => "ple_collapse",
            Scenario::LogFull => "log_full",
            Scenario::TempdbPressure => "tempdb_pressure",
            Scenario::IoStall => "io_stall",
            Scenario::BatchDrop => "batch_drop",
            Scenario::WaitTimeSpike => "wait_time_spike",
        }
    }

    /// The receiver metric the scenario mainly moves (see [`scenario_metric`]).
    pub fn metric(self) -> &'static str {
        match self {
            Scenario::Quiet => "",
            Scenario::CpuStorm => "sqlserver.cpu.utilization",
            Scenario::BlockingChain => "sqlserver.processes.blocked",
            Scenario::DeadlockBurst => "sqlserver.deadlock.rate",
            Scenario::PleCollapse => "sqlserver.page.life_expectancy",
            Scenario::LogFull => "sqlserver.transaction_log.usage",
            Scenario::TempdbPressure => "sqlserver.database.tempdb.space",
            Scenario::IoStall => "sqlserver.database.latency",
            Scenario::BatchDrop => "sqlserver.batch.request.rate",
            Scenario::WaitTimeSpike => "sqlserver.os.wait.duration",
        }
    }

    fn valid_names() -> String {
        Scenario::ALL
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The main metric `s` moves, as the `sqlserver` receiver names it (counters such as
/// `sqlserver.deadlock.rate` are running totals: rules read their `.per_second` series;
/// `sqlserver.database.latency` is read per operation against
/// `sqlserver.database.operations`). Empty for [`Scenario::Quiet`], which moves nothing.
pub fn scenario_metric(s: Scenario) -> &'static str {
    s.metric()
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == wanted)
            .ok_or_else(|| SimError::UnknownScenario {
                name: wanted.to_string(),
                valid: Scenario::valid_names(),
            })
    }
}

/// One injected incident: `scenario` on instance number `instance` (0-based), starting
/// `offset` after tick 0's event time and lasting `duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub scenario: Scenario,
    pub instance: usize,
    pub offset: Duration,
    pub duration: Duration,
}

impl Incident {
    /// Parse `scenario@offset+duration[:instance]`, e.g. `cpu_storm@3m+10m` (instance 0)
    /// or `blocking_chain@2m+6m:1`; durations use humantime syntax (`90s`, `1h 30m`).
    /// A bare `quiet` is accepted and means "no incident".
    pub fn parse(spec: &str) -> Result<Incident, SimError> {
        let spec = spec.trim();
        let bad = |reason: String| SimError::IncidentSpec {
            spec: spec.to_string(),
            reason,
        };
        let Some((name, timing)) = spec.split_once('@') else {
            if spec == Scenario::Quiet.name() {
                return Ok(Incident {
                    scenario: Scenario::Quiet,
                    instance: 0,
                    offset: Duration::ZERO,
                    duration: Duration::ZERO,
                });
            }
            return Err(bad(
                "expected `scenario@offset+duration[:instance]`, missing `@`".into(),
            ));
        };
        let scenario: Scenario = name.parse()?;
        let (timing, instance) = split_instance(timing).map_err(bad)?;
        let Some((offset, duration)) = timing.split_once('+') else {
            return Err(bad(format!(
                "expected `offset+duration` after `@`, got `{timing}`"
            )));
        };
        let offset = parse_duration("offset", offset).map_err(bad)?;
        let duration = parse_duration("duration", duration).map_err(bad)?;
        if duration.is_zero() && scenario != Scenario::Quiet {
            return Err(bad("duration must be greater than zero".into()));
        }
        Ok(Incident {
            scenario,
            instance,
            offset,
            duration,
        })
    }
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}+{}:{}",
            self.scenario,
            humantime::format_duration(self.offset),
            humantime::format_duration(self.duration),
            self.instance
        )
    }
}

/// Split the optional `:instance` suffix off the timing part.
fn split_instance(timing: &str) -> Result<(&str, usize), String> {
    match timing.rsplit_once(':') {
        None => Ok((timing, 0)),
        Some((rest, idx)) => {
            idx.trim().parse::<usize>().map(|i| (rest, i)).map_err(|_| {
                format!("instance index `{idx}` after `:` is not a non-negative integer")
            })
        }
    }
}

fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{what} `{text}` is not a duration: {e}"))
}

/// Ground truth for one injected incident, in event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentLabel {
    /// Scenario name (`cpu_storm`, `blocking_chain`, … as [`Scenario::name`]).
    pub name: String,
    pub scenario: Scenario,
    /// `sqlserver.instance.name` of the affected instance.
    pub instance: String,
    /// Event time the incident starts (inclusive), ns since the Unix epoch.
    pub start_ns: i64,
    /// Event time the incident ends (exclusive), ns since the Unix epoch.
    pub end_ns: i64,
}

impl IncidentLabel {
    /// Whether event time `t_ns` falls inside the incident.
    pub fn contains(&self, t_ns: i64) -> bool {
        (self.start_ns..self.end_ns).contains(&t_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let i = Incident::parse("cpu_storm@3m+10m").expect("valid");
        assert_eq!(i.scenario, Scenario::CpuStorm);
        assert_eq!(i.instance, 0);
        assert_eq!(i.offset, Duration::from_secs(180));
        assert_eq!(i.duration, Duration::from_secs(600));
        let i = Incident::parse("blocking_chain@2m+6m:1").expect("valid");
        assert_eq!((i.scenario, i.instance), (Scenario::BlockingChain, 1));
        assert_eq!(Incident::parse(&i.to_string()).expect("round trip"), i);
        assert_eq!(
            Incident::parse("quiet").expect("bare quiet").scenario,
            Scenario::Quiet
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |s: &str| Incident::parse(s).expect_err(s).to_string();
        let e = msg("disk_fire@1m+1m");
        assert!(
            e.contains("disk_fire") && e.contains("cpu_storm") && e.contains("blocking_chain"),
            "{e}"
        );
        assert!(msg("cpu_storm").contains("missing `@`"));
        assert!(msg("cpu_storm@3m").contains("offset+duration"));
        assert!(msg("cpu_storm@xx+1m").contains("offset `xx`"));
        assert!(msg("cpu_storm@1m+zz").contains("duration `zz`"));
        assert!(msg("cpu_storm@1m+2m:one").contains("instance index `one`"));
        assert!(msg("cpu_storm@1m+0s").contains("greater than zero"));
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.to_string().parse::<Scenario>().expect("name"), s);
            let spec = format!("{s}@1m+2m:1");
            assert_eq!(Incident::parse(&spec).expect(&spec).scenario, s);
        }
    }

    #[test]
    fn every_scenario_names_a_catalogue_metric() {
        for s in Scenario::ALL {
            let m = scenario_metric(s);
            if s == Scenario::Quiet {
                assert_eq!(m, "");
            } else {
                assert!(sqlvigil_model::catalogue::metric(m).is_some(), "{s}: {m}");
            }
        }
    }
}
