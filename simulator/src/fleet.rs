//! The fleet: instances, their incident windows, and per-tick OTLP requests.

use crate::events;
use crate::instance::{
    gauss, mix, rng_for, Effects, Phase, Profile, State, IO_RAMP_S, LOG_FILL_S, SALT_LOGS,
    TEMPDB_FILL_S,
};
use crate::otlp::{count_points, kv_int, kv_str, resource, scope};
use crate::scenario::{Incident, IncidentLabel, Scenario};
use crate::SimError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use rand::rngs::StdRng;
use rand::Rng;
use sqlvigil_model::catalogue::ReceiverMode;
use std::time::Duration;

/// 2024-01-01T00:00:00Z, the default event time of tick 0 (fixed so runs are repeatable).
pub const DEFAULT_START_TIME_NS: i64 = 1_704_067_200_000_000_000;

/// Scope of the simulated SQL Server error-log lines (what a filelog receiver would
/// read from `/var/opt/mssql/log/errorlog`).
pub const LOG_SCOPE_NAME: &str = "sqlvigil-simulator/errorlog";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub seed: u64,
    pub instances: usize,
    /// Event-time step between scrapes.
    pub interval: Duration,
    pub incidents: Vec<Incident>,
    /// Event time of tick 0, ns since the Unix epoch.
    pub start_time_ns: i64,
    /// How the simulated receiver reads each instance.
    pub receiver_mode: ReceiverModes,
}

/// Which of the receiver's modes the fleet is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiverModes {
    /// Windows performance counters: true per-second rates, Windows-only metrics.
    Windows,
    /// A direct connection (Linux, containers): raw `…/sec` totals, DMV metrics, the
    /// query events.
    #[default]
    Direct,
    /// Both: even instances (sql-01, sql-03, …) direct, odd ones Windows.
    Mixed,
}

impl ReceiverModes {
    pub fn for_instance(self, index: usize) -> ReceiverMode {
        match self {
            ReceiverModes::Windows => ReceiverMode::Windows,
            ReceiverModes::Direct => ReceiverMode::Direct,
            ReceiverModes::Mixed if index.is_multiple_of(2) => ReceiverMode::Direct,
            ReceiverModes::Mixed => ReceiverMode::Windows,
        }
    }
}

impl std::str::FromStr for ReceiverModes {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        match s.trim() {
            "windows" => Ok(ReceiverModes::Windows),
            "direct" => Ok(ReceiverModes::Direct),
            "mixed" => Ok(ReceiverModes::Mixed),
            other => Err(SimError::Config(format!(
                "unknown receiver mode `{other}` (valid: windows, direct, mixed)"
            ))),
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 42,
            instances: 3,
            interval: Duration::from_secs(10),
            incidents: Vec::new(),
            start_time_ns: DEFAULT_START_TIME_NS,
            receiver_mode: ReceiverModes::Direct,
        }
    }
}

/// Mixed into the seed of each incident's own draw.
const SALT_VARIANT: u64 = 0x5641_5249;

/// An incident resolved to event time.
#[derive(Debug, Clone, Copy)]
struct Window {
    scenario: Scenario,
    start_ns: i64,
    end_ns: i64,
    /// Per-incident draw (which wait type spikes, where plateaus start wobbling).
    variant: u64,
}

#[derive(Clone)]
struct Instance {
    profile: Profile,
    windows: Vec<Window>,
    state: State,
}

impl Instance {
    fn effects(&self, t_ns: i64) -> Effects {
        effects_at(&self.windows, t_ns)
    }
}

/// Which incidents are active at `t_ns`, and for how long they have been.
fn effects_at(windows: &[Window], t_ns: i64) -> Effects {
    let mut fx = Effects::default();
    for w in windows
        .iter()
        .filter(|w| (w.start_ns..w.end_ns).contains(&t_ns))
    {
        fx.add(
            w.scenario,
            Phase {
                elapsed_s: (t_ns - w.start_ns) as f64 / 1e9,
                duration_s: (w.end_ns - w.start_ns) as f64 / 1e9,
                variant: w.variant,
            },
        );
    }
    fx
}

/// A deterministic fleet of simulated SQL Server instances.
#[derive(Clone)]
pub struct Fleet {
    cfg: FleetConfig,
    instances: Vec<Instance>,
    points_per_tick: usize,
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Fleet {
    /// Build the fleet. Incidents naming an instance index the fleet does not have are
    /// dropped (with a warning) and do not appear in [`Fleet::labels`].
    pub fn new(cfg: FleetConfig) -> Self {
        let mut cfg = cfg;
        if cfg.interval.is_zero() {
            tracing::warn!("simulator interval of 0 replaced by 10s");
            cfg.interval = Duration::from_secs(10);
        }
        for bad in cfg.incidents.iter().filter(|i| i.instance >= cfg.instances) {
            tracing::warn!(incident = %bad, instances = cfg.instances, "incident names a missing instance; ignored");
        }
        let instances = (0..cfg.instances)
            .map(|idx| Self::instance(&cfg, idx))
            .collect();
        let mut fleet = Fleet {
            cfg,
            instances,
            points_per_tick: 0,
        };
        fleet.points_per_tick = fleet
            .instances
            .iter()
            .map(|i| count_points(&i.state.request(&i.profile, 0)))
            .sum();
        fleet
    }

    fn instance(cfg: &FleetConfig, idx: usize) -> Instance {
        let mut profile = Profile::new(cfg.seed, idx, cfg.start_time_ns);
        profile.mode = cfg.receiver_mode.for_instance(idx);
        let windows = cfg
            .incidents
            .iter()
            .filter(|i| i.instance == idx && i.scenario != Scenario::Quiet)
            .map(|i| {
                let start_ns = cfg.start_time_ns.saturating_add(duration_ns(i.offset));
                Window {
                    scenario: i.scenario,
                    start_ns,
                    end_ns: start_ns.saturating_add(duration_ns(i.duration)),
                    variant: mix(&[cfg.seed, idx as u64, start_ns as u64, SALT_VARIANT]),
                }
            })
            .collect::<Vec<_>>();
        // Tick 0 itself may fall inside an incident.
        let fx0 = effects_at(&windows, cfg.start_time_ns);
        let state = State::initial(&profile, cfg.seed, cfg.start_time_ns, fx0);
        Instance {
            profile,
            windows,
            state,
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// `sqlserver.instance.name` of every instance, by index.
    pub fn instance_names(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|i| i.profile.name.clone())
            .collect()
    }

    /// `host.name` of every instance, by index.
    pub fn host_names(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|i| i.profile.host.clone())
            .collect()
    }

    /// Event time of scrape `tick`, ns since the Unix epoch.
    pub fn event_time_ns(&self, tick: u64) -> i64 {
        let offset = (tick as i128) * (self.cfg.interval.as_nanos() as i128);
        i64::try_from(self.cfg.start_time_ns as i128 + offset).unwrap_or(i64::MAX)
    }

    /// All requests for scrape number `tick`: one per instance, holding the
    /// instance-level and per-database `ResourceMetrics`. Ticks are meant to be asked for
    /// in order; asking for an earlier tick replays from tick 0, so the result is always
    /// the same for the same seed and tick.
    pub fn metrics(&mut self, tick: u64) -> Vec<ExportMetricsServiceRequest> {
        let t_ns = self.event_time_ns(tick);
        let dt_s = self.cfg.interval.as_secs_f64();
        let (seed, start) = (self.cfg.seed, self.cfg.start_time_ns);
        let mut out = Vec::with_capacity(self.instances.len());
        for idx in 0..self.instances.len() {
            self.advance(idx, tick, seed, start, dt_s);
            let inst = &self.instances[idx];
            out.push(inst.state.request(&inst.profile, t_ns));
        }
        out
    }

    fn advance(&mut self, idx: usize, tick: u64, seed: u64, start: i64, dt_s: f64) {
        if self.instances[idx].state.tick > tick {
            let inst = &self.instances[idx];
            let fx = inst.effects(start);
            self.instances[idx].state = State::initial(&inst.profile, seed, start, fx);
        }
        while self.instances[idx].state.tick < tick {
            let t_ns = self.event_time_ns(self.instances[idx].state.tick + 1);
            let inst = &mut self.instances[idx];
            let fx = inst.effects(t_ns);
            inst.state.step(&inst.profile, seed, t_ns, dt_s, fx);
        }
    }

    /// CPU % and blocked processes of instance `idx` at `tick` (for tests and demos).
    pub fn probe(&mut self, idx: usize, tick: u64) -> Option<(f64, i64)> {
        if idx >= self.instances.len() {
            return None;
        }
        let (seed, start, dt_s) = (
            self.cfg.seed,
            self.cfg.start_time_ns,
            self.cfg.interval.as_secs_f64(),
        );
        self.advance(idx, tick, seed, start, dt_s);
        let st = &self.instances[idx].state;
        Some((st.cpu(), st.blocked()))
    }

    /// SQL Server error-log lines for scrape `tick`: occasional login failures and
    /// backups at baseline; non-yielding scheduler warnings in a CPU storm; blocked
    /// process reports and deadlock victims in a blocking chain; deadlock victims (1205)
    /// in a deadlock burst; "log is full" (9002) once a full log has filled; tempdb
    /// allocation failures (1105) once tempdb has filled; slow-I/O warnings (833) in an
    /// I/O stall. Over a direct connection, also the receiver's query events: query
    /// samples of a blocking chain and the top queries every minute ([`crate::events`]).
    /// One request per instance that logged something; often empty.
    pub fn logs(&mut self, tick: u64) -> Vec<ExportLogsServiceRequest> {
        let t_ns = self.event_time_ns(tick);
        let (seed, start, dt_s) = (
            self.cfg.seed,
            self.cfg.start_time_ns,
            self.cfg.interval.as_secs_f64(),
        );
        (0..self.instances.len())
            .filter_map(|idx| {
                self.advance(idx, tick, seed, start, dt_s);
                let inst = &self.instances[idx];
                let fx = inst.effects(t_ns);
                let mut rng = rng_for(&[seed, inst.profile.index as u64, tick, SALT_LOGS]);
                let records = log_lines(&inst.profile, fx, &mut rng)
                    .into_iter()
                    .map(|line| line.record(t_ns, &inst.profile))
                    .collect::<Vec<_>>();
                let mut scopes = Vec::new();
                if !records.is_empty() {
                    scopes.push(ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: LOG_SCOPE_NAME.to_string(),
                            version: env!("CARGO_PKG_VERSION").to_string(),
                            ..Default::default()
                        }),
                        log_records: records,
                        ..Default::default()
                    });
                }
                if inst.profile.mode == ReceiverMode::Direct {
                    let (cpu, blocked) = (inst.state.cpu(), inst.state.blocked());
                    let mut events = events::query_samples(&inst.profile, fx, blocked, t_ns);
                    events.extend(events::top_queries(
                        &inst.profile,
                        fx,
                        cpu,
                        tick,
                        dt_s,
                        t_ns,
                        &mut rng,
                    ));
                    if !events.is_empty() {
                        scopes.push(ScopeLogs {
                            scope: Some(scope()),
                            log_records: events,
                            ..Default::default()
                        });
                    }
                }
                (!scopes.is_empty()).then(|| ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        resource: Some(resource(&inst.profile.host, &inst.profile.name, None)),
                        scope_logs: scopes,
                        ..Default::default()
                    }],
                })
            })
            .collect()
    }

    /// Ground truth of every injected incident (quiet windows excluded), in event time,
    /// for every scenario: one label per incident, in instance then spec order.
    pub fn labels(&self) -> Vec<IncidentLabel> {
        self.instances
            .iter()
            .flat_map(|inst| {
                inst.windows.iter().map(|w| IncidentLabel {
                    name: w.scenario.name().to_string(),
                    scenario: w.scenario,
                    instance: inst.profile.name.clone(),
                    start_ns: w.start_ns,
                    end_ns: w.end_ns,
                })
            })
            .collect()
    }

    /// Data points per tick across the fleet (the layout is the same every tick).
    pub fn points_per_tick(&self) -> usize {
        self.points_per_tick
    }
}

/// One error-log line before it becomes an OTLP record.
struct Line {
    severity: SeverityNumber,
    category: &'static str,
    error: i64,
    message: String,
}

impl Line {
    fn record(self, t_ns: i64, p: &Profile) -> LogRecord {
        let time = t_ns.max(0) as u64;
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time,
            severity_number: self.severity as i32,
            severity_text: severity_text(self.severity).to_string(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(self.message)),
            }),
            attributes: vec![
                kv_str("log.category", self.category),
                kv_int("sqlserver.error.number", self.error),
                kv_str("log.file.path", "/var/opt/mssql/log/errorlog"),
                kv_str("sqlserver.instance.name", &p.name),
            ],
            ..Default::default()
        }
    }
}

fn severity_text(s: SeverityNumber) -> &'static str {
    match s {
        SeverityNumber::Error => "ERROR",
        SeverityNumber::Warn => "WARN",
        _ => "INFO",
    }
}

fn log_lines(p: &Profile, fx: Effects, rng: &mut StdRng) -> Vec<Line> {
    let mut lines = Vec::new();
    let app_db = p
        .databases
        .last()
        .map(|d| d.name.as_str())
        .unwrap_or("master");
    if rng.random::<f64>() < 0.02 {
        lines.push(Line {
            severity: SeverityNumber::Error,
            category: "Logon",
            error: 18456,
            message: format!(
                "Login failed for user 'app_reader'. Reason: Password did not match that for the login provided. [CLIENT: 10.0.3.{}]",
                rng.random_range(2..250)
            ),
        });
    }
    if rng.random::<f64>() < 0.005 {
        lines.push(Line {
            severity: SeverityNumber::Info,
            category: "Backup",
            error: 18265,
            message: format!(
                "Log was backed up. Database: {app_db}, pages dumped: {}.",
                rng.random_range(200..9000)
            ),
        });
    }
    if fx.cpu_storm.is_some() && rng.random::<f64>() < 0.2 {
        lines.push(Line {
            severity: SeverityNumber::Warn,
            category: "Server",
            error: 17883,
            message: format!(
                "Process 0:0:0 (0x{:x}) Worker 0x{:016X} appears to be non-yielding on Scheduler {}. Approx Thread CPU Used: kernel {} ms, user {} ms.",
                rng.random_range(0x1000..0xffff),
                rng.random::<u64>() & 0x0000_7fff_ffff_ffc0,
                rng.random_range(0..8),
                rng.random_range(5..60),
                rng.random_range(40_000..70_000)
            ),
        });
    }
    if let Some(elapsed) = fx.blocking {
        if rng.random::<f64>() < 0.3 {
            let waited = (elapsed + 5.0 + 10.0 * gauss(rng).abs()) as i64;
            lines.push(Line {
                severity: SeverityNumber::Warn,
                category: "Lock",
                error: 0,
                message: format!(
                    "Blocked process report: spid {} blocked by spid {} for {} seconds on KEY: 7:72057594045136896 (8194443284a0) in database {app_db}, wait type LCK_M_X.",
                    rng.random_range(60..200),
                    rng.random_range(51..60),
                    waited
                ),
            });
        }
        if rng.random::<f64>() < 0.15 {
            lines.push(deadlock_line(rng));
        }
    }
    if fx.deadlocks.is_some() {
        for _ in 0..rng.random_range(1..=3) {
            lines.push(deadlock_line(rng));
        }
    }
    if let Some(ph) = fx.log_full {
        if ph.ramp(LOG_FILL_S) >= 1.0 && rng.random::<f64>() < 0.3 {
            lines.push(Line {
                severity: SeverityNumber::Error,
                category: "Server",
                error: 9002,
                message: format!(
                    "The transaction log for database '{app_db}' is full due to 'LOG_BACKUP'."
                ),
            });
        }
    }
    if let Some(ph) = fx.tempdb {
        if ph.ramp(TEMPDB_FILL_S) >= 1.0 && rng.random::<f64>() < 0.25 {
            lines.push(Line {
                severity: SeverityNumber::Error,
                category: "Server",
                error: 1105,
                message: format!(
                    "Could not allocate space for object 'dbo.SORT temporary run storage:  {}' in database 'tempdb' because the 'PRIMARY' filegroup is full.",
                    rng.random_range(140_737_488_355_328_u64..140_737_500_000_000)
                ),
            });
        }
    }
    if let Some(ph) = fx.io_stall {
        if ph.ramp(IO_RAMP_S) >= 1.0 && rng.random::<f64>() < 0.15 {
            let file = &p.databases[rng.random_range(0..p.databases.len())].files[0];
            lines.push(Line {
                severity: SeverityNumber::Warn,
                category: "Server",
                error: 833,
                message: format!(
                    "SQL Server has encountered {} occurrence(s) of I/O requests taking longer than 15 seconds to complete on file [{}] in database id {}.",
                    rng.random_range(1..40),
                    file.physical,
                    rng.random_range(1..8)
                ),
            });
        }
    }
    lines
}

fn deadlock_line(rng: &mut StdRng) -> Line {
    Line {
        severity: SeverityNumber::Error,
        category: "Deadlock",
        error: 1205,
        message: format!(
            "Transaction (Process ID {}) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.",
            rng.random_range(60..200)
        ),
    }
}
