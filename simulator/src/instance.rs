//! One simulated SQL Server instance: a fixed profile drawn from its own seed, and the
//! state (running totals, smoothed noise) that advances one scrape at a time.
//!
//! Every random draw comes from a generator seeded by (fleet seed, instance index, tick,
//! purpose), so an instance's series do not depend on how many other instances exist,
//! and logs do not disturb metrics.

use crate::otlp::{kv_str, metric, resource, scope, Num, Point, Stamp};
use crate::scenario::Scenario;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlvigil_model::catalogue::{self, ReceiverMode};
use std::f64::consts::TAU;

/// Purposes mixed into per-tick seeds so each stream is independent.
pub(crate) const SALT_PROFILE: u64 = 0x5052_4f46;
pub(crate) const SALT_METRICS: u64 = 0x4d45_5452;
pub(crate) const SALT_LOGS: u64 = 0x4c4f_4753;

/// SplitMix64 finaliser: turns structured inputs into well-spread seeds.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &p in parts {
        let mut z = h ^ p.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h = z ^ (z >> 31);
    }
    h
}

pub(crate) fn rng_for(parts: &[u64]) -> StdRng {
    StdRng::seed_from_u64(mix(parts))
}

/// Standard normal draw (Box–Muller); `rand_distr` is not a workspace dependency.
pub(crate) fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// Wait types the simulator reports, with the category the receiver's query assigns.
pub const WAITS: [(&str, &str); 6] = [
    ("LCK_M_X", "Lock"),
    ("PAGEIOLATCH_SH", "Buffer IO"),
    ("CXPACKET", "Parallelism"),
    ("SOS_SCHEDULER_YIELD", "CPU"),
    ("WRITELOG", "Tran Log IO"),
    ("ASYNC_NETWORK_IO", "Network IO"),
];
const W_LOCK: usize = 0;
const W_PAGEIO: usize = 1;
const W_CX: usize = 2;
const W_SOS: usize = 3;
const W_WRITELOG: usize = 4;
const W_NET: usize = 5;

/// Baseline seconds waited per second of wall time, per wait type, at load 1.
const BASE_WAITS: [f64; 6] = [0.01, 0.25, 0.4, 0.15, 0.12, 0.08];

/// Wait types a wait-time spike may hit, picked per incident.
pub(crate) const SPIKE_WAITS: [usize; 4] = [W_LOCK, W_PAGEIO, W_CX, W_NET];

/// Index into [`WAITS`] of the wait type a wait-time spike with `variant` hits.
pub(crate) fn spike_wait(variant: u64) -> usize {
    SPIKE_WAITS[(variant % SPIKE_WAITS.len() as u64) as usize]
}

/// Time constant of the page-life-expectancy collapse, s.
pub(crate) const PLE_TAU_S: f64 = 10.0;
/// Longest time the full-log scenario takes to reach 95–99 %, s.
pub(crate) const LOG_FILL_S: f64 = 600.0;
/// Longest time tempdb pressure takes to fill tempdb, s.
pub(crate) const TEMPDB_FILL_S: f64 = 180.0;
/// Longest time an I/O stall takes to reach full latency, s.
pub(crate) const IO_RAMP_S: f64 = 30.0;
/// Log usage at which the periodic log backup truncates the log, %.
const LOG_BACKUP_AT: f64 = 60.0;
/// Weekend load relative to weekdays.
const WEEKEND_LOAD: f64 = 0.6;

/// Application database names, picked per instance.
const APP_DBS: [&str; 5] = ["sales", "inventory", "crm", "billing", "orders"];

/// Where the receiver's wait-stats query says the waits belong: it reports them under
/// the database of its connection, `master` by default.
pub(crate) const WAIT_DATABASE: &str = "master";

/// One database file, as `sys.dm_io_virtual_file_stats` sees it.
#[derive(Debug, Clone)]
pub(crate) struct DbFile {
    pub logical: String,
    pub physical: String,
    /// `ROWS` or `LOG`.
    pub file_type: &'static str,
}

/// A database with its files and its share of the instance's workload.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub name: String,
    pub files: [DbFile; 2],
    /// Fraction of the instance's transactions and I/O that land here.
    pub weight: f64,
}

fn database(name: &str, data: (&str, &str), log: (&str, &str), weight: f64) -> Database {
    let dir = "/var/opt/mssql/data";
    Database {
        name: name.to_string(),
        files: [
            DbFile {
                logical: data.0.into(),
                physical: format!("{dir}/{}", data.1),
                file_type: "ROWS",
            },
            DbFile {
                logical: log.0.into(),
                physical: format!("{dir}/{}", log.1),
                file_type: "LOG",
            },
        ],
        weight,
    }
}

/// What stays fixed for an instance's lifetime.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub index: usize,
    pub name: String,
    pub host: String,
    pub databases: Vec<Database>,
    /// CPU % at an average point of the day.
    base_cpu: f64,
    base_batch: f64,
    base_conn: f64,
    base_ple: f64,
    /// Shift of the daily curve, hours.
    phase_h: f64,
    /// Typical read stall per operation, s.
    read_latency_s: f64,
    /// When SQL Server started, ns (start_time_unix_nano of every point).
    pub process_start_ns: i64,
    uptime_s: f64,
    /// How the simulated receiver reads this instance.
    pub mode: ReceiverMode,
}

impl Profile {
    pub fn new(seed: u64, index: usize, start_time_ns: i64) -> Self {
        let mut rng = rng_for(&[seed, index as u64, SALT_PROFILE]);
        let app = APP_DBS[index % APP_DBS.len()];
        let uptime_s = rng.random_range(3.0..40.0) * 86_400.0;
        Profile {
            mode: ReceiverMode::Direct,
            index,
            name: format!("sql-{:02}", index + 1),
            host: format!("sqlhost-{:02}", index + 1),
            databases: vec![
                database(
                    "master",
                    ("master", "master.mdf"),
                    ("mastlog", "mastlog.ldf"),
                    0.02,
                ),
                database(
                    "tempdb",
                    ("tempdev", "tempdb.mdf"),
                    ("templog", "templog.ldf"),
                    0.25,
                ),
                database(
                    app,
                    (app, &format!("{app}.mdf")),
                    (&format!("{app}_log"), &format!("{app}_log.ldf")),
                    1.0,
                ),
            ],
            base_cpu: rng.random_range(18.0..30.0),
            base_batch: rng.random_range(150.0..900.0),
            base_conn: rng.random_range(40.0..160.0),
            base_ple: rng.random_range(1500.0..5000.0),
            phase_h: rng.random_range(-1.5..1.5),
            read_latency_s: rng.random_range(0.0025..0.0045),
            process_start_ns: start_time_ns.saturating_sub((uptime_s * 1e9) as i64),
            uptime_s,
        }
    }

    /// 0 in the small hours, 1 mid-afternoon (UTC, shifted by the instance's phase).
    fn daily(&self, t_ns: i64) -> f64 {
        let hour = (t_ns.rem_euclid(86_400 * 1_000_000_000) as f64) / 3.6e12;
        0.5 - 0.5 * (TAU * (hour - 3.0 - self.phase_h) / 24.0).cos()
    }
}

/// Load factor of the day of week: 1 Monday–Friday, [`WEEKEND_LOAD`] Saturday and
/// Sunday, blended linearly over the four hours around each midnight (UTC).
pub(crate) fn weekly(t_ns: i64) -> f64 {
    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    let day = t_ns.div_euclid(DAY_NS);
    let hour = t_ns.rem_euclid(DAY_NS) as f64 / 3.6e12;
    // 1970-01-01 was a Thursday: Monday is 0.
    let factor = |d: i64| {
        if (d + 3).rem_euclid(7) >= 5 {
            WEEKEND_LOAD
        } else {
            1.0
        }
    };
    let lerp = |a: f64, b: f64, f: f64| a + (b - a) * f;
    if hour < 2.0 {
        lerp(factor(day - 1), factor(day), (hour + 2.0) / 4.0)
    } else if hour > 22.0 {
        lerp(factor(day), factor(day + 1), (hour - 22.0) / 4.0)
    } else {
        factor(day)
    }
}

/// Page life expectancy grows through the day and drops back a little at the nightly
/// 02:00 index maintenance: 0.9 → 1.1 of the instance's level.
fn ple_growth(t_ns: i64) -> f64 {
    let hour = (t_ns.rem_euclid(86_400 * 1_000_000_000) as f64) / 3.6e12;
    0.9 + 0.2 * (hour - 2.0).rem_euclid(24.0) / 24.0
}

/// Where an active incident is in its window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// Seconds since the incident started.
    pub elapsed_s: f64,
    /// Length of the whole window, s.
    pub duration_s: f64,
    /// Per-incident draw: which wait type spikes, where the plateau's wobble starts.
    pub variant: u64,
}

impl Phase {
    /// 0 → 1 linearly over `secs`, or over a third of the window if that is shorter.
    pub fn ramp(&self, secs: f64) -> f64 {
        let span = secs.min(self.duration_s / 3.0);
        if span <= 0.0 {
            1.0
        } else {
            (self.elapsed_s / span).clamp(0.0, 1.0)
        }
    }

    /// e^(−elapsed/τ): what is left of the old level in an exponential approach.
    pub fn decay(&self, tau_s: f64) -> f64 {
        (-self.elapsed_s / tau_s).exp()
    }

    /// A slow deterministic wobble in [−1, 1], so plateaus are not flat lines.
    pub fn wobble(&self, period_s: f64) -> f64 {
        (self.elapsed_s / period_s + (self.variant % 628) as f64 / 100.0).sin()
    }
}

/// Incident windows relevant to one tick of one instance.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Effects {
    /// Seconds since the CPU storm started, when one is active.
    pub cpu_storm: Option<f64>,
    /// Seconds since the blocking chain started, when one is active.
    pub blocking: Option<f64>,
    pub deadlocks: Option<Phase>,
    pub ple_collapse: Option<Phase>,
    pub log_full: Option<Phase>,
    pub tempdb: Option<Phase>,
    pub io_stall: Option<Phase>,
    pub batch_drop: Option<Phase>,
    pub wait_spike: Option<Phase>,
}

impl Effects {
    pub fn add(&mut self, scenario: Scenario, phase: Phase) {
        let slot = match scenario {
            Scenario::Quiet => return,
            Scenario::CpuStorm => {
                self.cpu_storm = Some(phase.elapsed_s);
                return;
            }
            Scenario::BlockingChain => {
                self.blocking = Some(phase.elapsed_s);
                return;
            }
            Scenario::DeadlockBurst => &mut self.deadlocks,
            Scenario::PleCollapse => &mut self.ple_collapse,
            Scenario::LogFull => &mut self.log_full,
            Scenario::TempdbPressure => &mut self.tempdb,
            Scenario::IoStall => &mut self.io_stall,
            Scenario::BatchDrop => &mut self.batch_drop,
            Scenario::WaitTimeSpike => &mut self.wait_spike,
        };
        *slot = Some(phase);
    }
}

/// Running totals of one file (bytes, operations, stall seconds), read then write.
#[derive(Debug, Clone, Default)]
struct FileTotals {
    bytes: [f64; 2],
    ops: [f64; 2],
    stall_s: [f64; 2],
}

#[derive(Debug, Clone)]
struct DbState {
    transactions: f64,
    /// Log usage as the backup cycle alone would leave it, %.
    log_usage: f64,
    /// Log usage reported this tick, %.
    log_shown: f64,
    /// Usage when a full-log incident began (set while one is active).
    log_full_from: Option<f64>,
    log_growths: i64,
    files: [FileTotals; 2],
}

/// Everything that changes from one scrape to the next.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// Tick the state describes.
    pub tick: u64,
    cpu_noise: f64,
    load_noise: f64,
    ple_noise: f64,
    // Raw `…/sec` counters (running totals, as direct-connection mode reports them).
    batches: f64,
    compilations: f64,
    recompilations: f64,
    lock_waits: f64,
    deadlocks: f64,
    page_splits: f64,
    waits_s: [f64; 6],
    dbs: Vec<DbState>,
    // Gauges of the current tick.
    cpu: f64,
    connections: i64,
    blocked: i64,
    lock_wait_avg_ms: f64,
    hit_ratio: f64,
    ple: i64,
    tempdb_used_kb: i64,
    /// The `…/sec` totals of the previous tick and the time since: a Windows
    /// perf-counter receiver reports the rate between them.
    prev: Totals,
    dt_s: f64,
}

/// The `…/sec` counters' running totals at one tick.
#[derive(Debug, Clone, Default)]
struct Totals {
    batches: f64,
    compilations: f64,
    recompilations: f64,
    lock_waits: f64,
    deadlocks: f64,
    page_splits: f64,
    transactions: Vec<f64>,
}

/// Size of tempdb's data files, KB.
const TEMPDB_TOTAL_KB: i64 = 8 * 1024 * 1024;

impl State {
    /// The state at tick 0: counters as if the server had run `uptime` at its average
    /// load, gauges drawn for event time `t0_ns`.
    pub fn initial(p: &Profile, seed: u64, t0_ns: i64, fx: Effects) -> Self {
        let mut rng = rng_for(&[seed, p.index as u64, 0, SALT_METRICS]);
        let up = p.uptime_s * 0.8;
        let batches = p.base_batch * up;
        let dbs = p
            .databases
            .iter()
            .map(|db| DbState {
                transactions: batches * 0.6 * db.weight,
                log_usage: rng.random_range(8.0..40.0),
                log_shown: 0.0,
                log_full_from: None,
                log_growths: rng.random_range(0..6),
                files: std::array::from_fn(|i| {
                    // Log files see far fewer reads than data files.
                    let w = db.weight * if i == 0 { 1.0 } else { 0.3 };
                    FileTotals {
                        bytes: [up * 400_000.0 * w, up * 120_000.0 * w],
                        ops: [up * 50.0 * w, up * 15.0 * w],
                        stall_s: [up * 50.0 * w * 0.004, up * 15.0 * w * 0.001],
                    }
                }),
            })
            .collect();
        let mut state = State {
            tick: 0,
            cpu_noise: 0.0,
            load_noise: 0.0,
            ple_noise: 0.0,
            batches,
            compilations: batches * 0.08,
            recompilations: batches * 0.004,
            lock_waits: up * 0.5,
            deadlocks: (up / 3_600.0).floor(),
            page_splits: batches * 0.03,
            waits_s: BASE_WAITS.map(|r| r * up),
            dbs,
            cpu: p.base_cpu,
            connections: p.base_conn as i64,
            blocked: 0,
            lock_wait_avg_ms: 12.0,
            hit_ratio: 99.7,
            ple: p.base_ple as i64,
            tempdb_used_kb: 300_000,
            prev: Totals::default(),
            dt_s: 0.0,
        };
        state.observe(p, &mut rng, t0_ns, 0.0, fx);
        state.prev = state.totals();
        state
    }

    /// Advance one scrape: draw this tick's gauges and integrate rates over `dt_s`.
    pub fn step(&mut self, p: &Profile, seed: u64, t_ns: i64, dt_s: f64, fx: Effects) {
        self.tick += 1;
        self.prev = self.totals();
        self.dt_s = dt_s;
        let mut rng = rng_for(&[seed, p.index as u64, self.tick, SALT_METRICS]);
        self.observe(p, &mut rng, t_ns, dt_s, fx);
    }

    /// Draw the gauges for the current tick and add this tick's share to the totals.
    fn observe(&mut self, p: &Profile, rng: &mut StdRng, t_ns: i64, dt_s: f64, fx: Effects) {
        // Smoothed noise (AR(1)) so series wander like real ones instead of jittering.
        self.cpu_noise = 0.85 * self.cpu_noise + 1.5 * gauss(rng);
        self.load_noise = (0.9 * self.load_noise + 0.02 * gauss(rng)).clamp(-0.15, 0.15);
        self.ple_noise = (0.97 * self.ple_noise + 0.02 * gauss(rng)).clamp(-0.3, 0.3);
        let day = p.daily(t_ns);
        let week = weekly(t_ns);
        let load = (0.55 + 0.9 * day) * week * (1.0 + self.load_noise);
        let jitter = |rng: &mut StdRng, sd: f64| (1.0 + sd * gauss(rng)).max(0.0);

        self.cpu = cpu(p, day, week, self.cpu_noise, fx, rng);
        self.blocked = blocked(fx, rng);
        let storm = fx.cpu_storm.is_some();
        let blocking = fx.blocking.is_some();
        // An application outage: only a trickle of batches (5–10 %) still arrives.
        let drop = fx
            .batch_drop
            .map_or(1.0, |ph| 0.075 + 0.025 * ph.wobble(67.0));
        let io_stall = fx.io_stall.map_or(0.0, |ph| ph.ramp(IO_RAMP_S));

        // Throughput: a CPU storm is a workload surge; a blocking chain stalls batches.
        let batch_rate = p.base_batch
            * load
            * if storm { 1.8 } else { 1.0 }
            * if blocking { 0.7 } else { 1.0 }
            * drop
            * (1.0 - 0.25 * io_stall)
            * jitter(rng, 0.04);
        let compile_rate = batch_rate * if storm { 0.3 } else { 0.08 } * jitter(rng, 0.05);
        let lock_wait_rate = if blocking {
            40.0 + 25.0 * self.blocked as f64 * jitter(rng, 0.1)
        } else {
            (0.3 + p.base_batch * 0.002 * load * drop)
                * jitter(rng, 0.2)
                * if fx.deadlocks.is_some() { 1.5 } else { 1.0 }
        };
        self.batches += batch_rate * dt_s;
        self.compilations += compile_rate * dt_s;
        self.recompilations += compile_rate * 0.05 * dt_s;
        self.lock_waits += lock_wait_rate * dt_s;
        self.page_splits += batch_rate * 0.03 * jitter(rng, 0.1) * dt_s;
        // Deadlocks are whole events: none at baseline (a single one in a 10 s scrape
        // would already read 0.1/s), now and then in a blocking chain, 0.5–3/s in a burst.
        let deadlock_p = if blocking { 0.15 } else { 0.0 };
        if rng.random::<f64>() < deadlock_p {
            self.deadlocks += 1.0;
        }
        if let Some(ph) = fx.deadlocks {
            let rate = (1.6 + 1.0 * ph.wobble(71.0) + 0.3 * gauss(rng)).clamp(0.5, 3.0);
            self.deadlocks += (rate * dt_s + rng.random::<f64>()).floor();
        }

        self.lock_wait_avg_ms = if blocking {
            2_000.0 + 500.0 * self.blocked as f64 * jitter(rng, 0.15)
        } else {
            (8.0 + 12.0 * load) * jitter(rng, 0.15)
        };
        let mut conns = p.base_conn * load * jitter(rng, 0.03);
        if let Some(ph) = fx.batch_drop {
            // The application servers are gone; admin and monitoring sessions remain.
            conns *= 0.2 + 0.05 * ph.wobble(89.0);
        }
        self.connections = (conns + 2.0 * self.blocked as f64).round() as i64;
        self.hit_ratio = if storm {
            98.2 + 0.4 * rng.random::<f64>()
        } else {
            (99.7 + 0.08 * gauss(rng)).min(100.0)
        };
        let ple =
            p.base_ple * (1.0 + self.ple_noise) * ple_growth(t_ns) * if storm { 0.35 } else { 1.0 };
        let mut ple = ple.max(30.0);
        if let Some(ph) = fx.ple_collapse {
            // Something floods the buffer pool: pages are evicted within seconds.
            let left = ph.decay(PLE_TAU_S);
            let floor = 32.0 + 15.0 * ph.wobble(59.0);
            ple = floor + (ple - floor) * left;
            let low_hit = 91.0 + 1.5 * ph.wobble(43.0);
            self.hit_ratio = low_hit + (self.hit_ratio - low_hit) * left;
        }
        self.ple = ple as i64;
        let mut used =
            (250_000.0 + 150_000.0 * load) * if storm { 2.5 } else { 1.0 } * jitter(rng, 0.03);
        if let Some(ph) = fx.tempdb {
            // A runaway spill or version store fills tempdb to 96–99 %.
            let full = TEMPDB_TOTAL_KB as f64 * (0.975 + 0.012 * ph.wobble(37.0));
            used += (full - used) * ph.ramp(TEMPDB_FILL_S);
        }
        self.tempdb_used_kb = (used as i64).clamp(0, TEMPDB_TOTAL_KB);

        self.add_waits(load, fx, dt_s, rng);
        self.add_db_activity(p, batch_rate, fx, dt_s, rng);
    }

    fn add_waits(&mut self, load: f64, fx: Effects, dt_s: f64, rng: &mut StdRng) {
        let storm = fx.cpu_storm.is_some();
        // Seconds of waiting per second of wall time, summed over all tasks.
        let mut rates = BASE_WAITS.map(|r| r * load);
        if storm {
            rates[W_SOS] *= 12.0;
            rates[W_CX] *= 4.0;
            rates[W_PAGEIO] *= 1.5;
        }
        if fx.blocking.is_some() {
            // Every blocked session spends (almost) the whole interval waiting on the lock.
            rates[W_LOCK] += 0.9 * self.blocked as f64;
            rates[W_WRITELOG] *= 0.8;
        }
        if fx.deadlocks.is_some() {
            rates[W_LOCK] *= 1.6;
        }
        if let Some(ph) = fx.ple_collapse {
            // Every evicted page has to be read back from disk.
            rates[W_PAGEIO] *= 1.0 + 5.0 * (1.0 - ph.decay(PLE_TAU_S));
        }
        if let Some(ph) = fx.io_stall {
            let f = ph.ramp(IO_RAMP_S);
            rates[W_PAGEIO] *= 1.0 + 7.0 * f;
            rates[W_WRITELOG] *= 1.0 + 5.0 * f;
        }
        if fx.batch_drop.is_some() {
            rates = rates.map(|r| r * 0.3);
        }
        if let Some(ph) = fx.wait_spike {
            rates[spike_wait(ph.variant)] *= 8.0 + 2.0 * ph.wobble(97.0);
        }
        for (total, rate) in self.waits_s.iter_mut().zip(rates) {
            *total += rate * (1.0 + 0.05 * gauss(rng)).max(0.0) * dt_s;
        }
    }

    fn add_db_activity(
        &mut self,
        p: &Profile,
        batch_rate: f64,
        fx: Effects,
        dt_s: f64,
        rng: &mut StdRng,
    ) {
        let storm = fx.cpu_storm.is_some();
        // Share of the buffer pool lost: that many more physical reads, a bit slower.
        let evicted = fx.ple_collapse.map_or(0.0, |ph| 1.0 - ph.decay(PLE_TAU_S));
        // (how far the stall has ramped, the stall per operation it ramps to).
        let stall = fx.io_stall.map(|ph| {
            (
                ph.ramp(IO_RAMP_S),
                (170.0 + 90.0 * ph.wobble(83.0)) / 1000.0,
            )
        });
        for (db, st) in p.databases.iter().zip(self.dbs.iter_mut()) {
            let w = db.weight;
            let is_app = w >= 1.0;
            let txn_rate = batch_rate * 0.6 * w;
            st.transactions += txn_rate * dt_s;
            // Log fills with transactions and is emptied by the periodic log backup.
            st.log_usage += txn_rate * dt_s * 0.00004 * (0.5 + rng.random::<f64>());
            if st.log_usage > LOG_BACKUP_AT {
                st.log_usage = rng.random_range(4.0..10.0);
            }
            if is_app && rng.random::<f64>() < 0.0002 {
                st.log_growths += 1;
            }
            let before = st.log_shown;
            match fx.log_full.filter(|_| is_app) {
                Some(ph) => {
                    // Log backups fail (or an open transaction pins the log): it climbs
                    // steadily to 95–99 % and autogrowth keeps firing.
                    let from = *st.log_full_from.get_or_insert(st.log_usage);
                    let top = 97.0 + 1.9 * ph.wobble(41.0);
                    st.log_shown = from + (top - from) * ph.ramp(LOG_FILL_S);
                    let crossed = |level: f64| before < level && st.log_shown >= level;
                    let autogrowth = crossed(85.0)
                        || crossed(95.0)
                        || (st.log_shown >= 95.0 && rng.random::<f64>() < dt_s / 180.0);
                    if autogrowth {
                        st.log_growths += 1;
                    }
                }
                None => {
                    if st.log_full_from.take().is_some() {
                        // Incident over: the next log backup truncates the log.
                        st.log_usage = rng.random_range(4.0..10.0);
                    }
                    st.log_shown = st.log_usage;
                }
            }
            let spill = if fx.tempdb.is_some() && db.name == "tempdb" {
                6.0
            } else {
                1.0
            };
            for (file, totals) in db.files.iter().zip(st.files.iter_mut()) {
                let is_log = file.file_type == "LOG";
                let reads = if is_log {
                    0.5
                } else {
                    0.08 * batch_rate
                        * if storm { 2.0 } else { 1.0 }
                        * (1.0 + 3.0 * evicted)
                        * spill
                } * w;
                let writes = if is_log {
                    0.1 * batch_rate
                } else {
                    0.02 * batch_rate * spill
                } * w;
                let read_size = if is_log { 61_440.0 } else { 8_192.0 };
                let write_size = if is_log { 4_096.0 } else { 8_192.0 };
                let r = reads * (1.0 + 0.1 * gauss(rng)).max(0.0) * dt_s;
                let wr = writes * (1.0 + 0.1 * gauss(rng)).max(0.0) * dt_s;
                // Stall is charged per whole operation reported, so stall ÷ operations
                // over any interval is the per-operation latency.
                let (r_ops, w_ops) = (
                    add_ops(&mut totals.ops[0], r),
                    add_ops(&mut totals.ops[1], wr),
                );
                totals.bytes[0] += r * read_size;
                totals.bytes[1] += wr * write_size;
                let mut read_latency = if storm {
                    0.012
                } else {
                    p.read_latency_s + if is_log { 0.0 } else { 0.004 * evicted }
                } * latency_jitter(rng);
                let mut write_latency = if is_log { 0.0015 } else { 0.001 } * latency_jitter(rng);
                if let Some((f, stall_s)) = stall {
                    let slow = |rng: &mut StdRng, scale: f64| {
                        (stall_s * scale * latency_jitter(rng)).clamp(0.08, 0.3)
                    };
                    read_latency += (slow(rng, 1.0) - read_latency) * f;
                    write_latency += (slow(rng, 0.8) - write_latency) * f;
                }
                totals.stall_s[0] += r_ops * read_latency;
                totals.stall_s[1] += w_ops * write_latency;
            }
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            batches: self.batches,
            compilations: self.compilations,
            recompilations: self.recompilations,
            lock_waits: self.lock_waits,
            deadlocks: self.deadlocks,
            page_splits: self.page_splits,
            transactions: self.dbs.iter().map(|d| d.transactions).collect(),
        }
    }

    /// A `…/sec` performance counter as the receiver reports it: the raw running total
    /// (`cntr_value`) over a direct connection, the per-second rate since the previous
    /// scrape from Windows perf counters.
    fn per_sec(&self, mode: ReceiverMode, total: f64, prev: f64) -> Num {
        match mode {
            ReceiverMode::Direct => Num::F(total.floor()),
            ReceiverMode::Windows if self.dt_s > 0.0 => {
                Num::F(round3((total.floor() - prev.floor()).max(0.0) / self.dt_s))
            }
            ReceiverMode::Windows => Num::F(0.0),
        }
    }

    /// The receiver-shaped request for the current tick: the metrics the profile's
    /// receiver mode emits (the catalogue's `mode`), in its units.
    pub fn request(&self, p: &Profile, t_ns: i64) -> ExportMetricsServiceRequest {
        let stamp = Stamp {
            start_ns: p.process_start_ns.max(0) as u64,
            time_ns: t_ns.max(0) as u64,
        };
        let emitted = |mut metrics: Vec<Metric>| {
            metrics.retain(|m| catalogue::metric(&m.name).is_none_or(|d| d.mode.emits_in(p.mode)));
            metrics
        };
        let mut resource_metrics = vec![resource_block(
            p,
            None,
            emitted(self.instance_metrics(p.mode, stamp)),
        )];
        for (i, (db, st)) in p.databases.iter().zip(&self.dbs).enumerate() {
            let prev_tx = self
                .prev
                .transactions
                .get(i)
                .copied()
                .unwrap_or(st.transactions);
            let tx = self.per_sec(p.mode, st.transactions, prev_tx);
            let mut metrics = db_metrics(db, st, tx, stamp);
            if db.name == WAIT_DATABASE {
                metrics.push(self.wait_metric(stamp));
            }
            resource_metrics.push(resource_block(p, Some(&db.name), emitted(metrics)));
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn instance_metrics(&self, mode: ReceiverMode, stamp: Stamp) -> Vec<Metric> {
        let one = |name: &str, v: Num| metric(name, vec![Point::plain(v)], stamp);
        let rate = |total: f64, prev: f64| self.per_sec(mode, total, prev);
        let pv = &self.prev;
        vec![
            // The receiver's unit for host CPU is `1`, a fraction (sqlvigil shows 0–100).
            one(
                "sqlserver.cpu.utilization",
                Num::F((self.cpu * 1000.0).round() / 100_000.0),
            ),
            one("sqlserver.user.connection.count", Num::I(self.connections)),
            one("sqlserver.processes.blocked", Num::I(self.blocked)),
            one(
                "sqlserver.lock.wait_time.avg",
                Num::F(round3(self.lock_wait_avg_ms)),
            ),
            one(
                "sqlserver.lock.wait.rate",
                rate(self.lock_waits, pv.lock_waits),
            ),
            one(
                "sqlserver.batch.request.rate",
                rate(self.batches, pv.batches),
            ),
            one(
                "sqlserver.batch.sql_compilation.rate",
                rate(self.compilations, pv.compilations),
            ),
            one(
                "sqlserver.batch.sql_recompilation.rate",
                rate(self.recompilations, pv.recompilations),
            ),
            one(
                "sqlserver.deadlock.rate",
                rate(self.deadlocks, pv.deadlocks),
            ),
            one(
                "sqlserver.page.split.rate",
                rate(self.page_splits, pv.page_splits),
            ),
            one(
                "sqlserver.page.buffer_cache.hit_ratio",
                Num::F(round3(self.hit_ratio)),
            ),
            metric(
                "sqlserver.page.life_expectancy",
                vec![Point {
                    attrs: vec![kv_str(
                        "performance_counter.object_name",
                        match mode {
                            ReceiverMode::Direct => "SQLServer:Buffer Manager",
                            ReceiverMode::Windows => "Buffer Manager",
                        },
                    )],
                    value: Num::I(self.ple),
                }],
                stamp,
            ),
            metric(
                "sqlserver.database.tempdb.space",
                vec![
                    Point {
                        attrs: vec![kv_str("tempdb.state", "free")],
                        value: Num::I(TEMPDB_TOTAL_KB - self.tempdb_used_kb),
                    },
                    Point {
                        attrs: vec![kv_str("tempdb.state", "used")],
                        value: Num::I(self.tempdb_used_kb),
                    },
                ],
                stamp,
            ),
        ]
    }

    fn wait_metric(&self, stamp: Stamp) -> Metric {
        let points = WAITS
            .iter()
            .zip(self.waits_s)
            .map(|((wait_type, category), total)| Point {
                attrs: vec![
                    kv_str("wait.category", category),
                    kv_str("wait.type", wait_type),
                ],
                // SQL Server keeps wait time in whole ms; the receiver divides by 1000.
                value: Num::F((total * 1000.0).floor() / 1000.0),
            })
            .collect();
        metric("sqlserver.os.wait.duration", points, stamp)
    }

    pub fn cpu(&self) -> f64 {
        self.cpu
    }

    pub fn blocked(&self) -> i64 {
        self.blocked
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Add `exact` operations to a running total; returns how many whole operations the
/// reported (truncated) total gained.
fn add_ops(total: &mut f64, exact: f64) -> f64 {
    let before = total.floor();
    *total += exact;
    total.floor() - before
}

/// Per-tick spread of an I/O latency: ±15 %, never below 0.6× or above 1.5×.
fn latency_jitter(rng: &mut StdRng) -> f64 {
    (1.0 + 0.15 * gauss(rng)).clamp(0.6, 1.5)
}

/// Host CPU: daily and weekly curve plus smoothed noise, kept well under alerting
/// thresholds unless a CPU storm pins it at 90–99 %; an application outage idles it.
fn cpu(p: &Profile, day: f64, week: f64, noise: f64, fx: Effects, rng: &mut StdRng) -> f64 {
    match fx.cpu_storm {
        Some(elapsed) => (93.5 + 2.5 * (elapsed / 47.0).sin() + 1.2 * gauss(rng)).clamp(90.0, 99.0),
        None => {
            let outage = if fx.batch_drop.is_some() { 0.45 } else { 1.0 };
            (p.base_cpu * (0.6 + 0.7 * day) * week * outage + noise).clamp(8.0, 58.0)
        }
    }
}

/// Blocked processes: 0, rarely 1, at baseline; a chain that builds to 8–20 within
/// two minutes and never drops below 5 while it lasts.
fn blocked(fx: Effects, rng: &mut StdRng) -> i64 {
    match fx.blocking {
        Some(elapsed) => {
            let ramp = (0.45 + elapsed / 120.0).min(1.0);
            (16.0 * ramp + 2.0 * gauss(rng)).round().clamp(5.0, 20.0) as i64
        }
        None => i64::from(rng.random::<f64>() < 0.03),
    }
}

fn db_metrics(db: &Database, st: &DbState, transactions: Num, stamp: Stamp) -> Vec<Metric> {
    let one = |name: &str, v: Num| metric(name, vec![Point::plain(v)], stamp);
    let per_file = |pick: &dyn Fn(&FileTotals, usize) -> Num| -> Vec<Point> {
        let mut points = Vec::with_capacity(4);
        for (dir_idx, direction) in ["read", "write"].into_iter().enumerate() {
            for (file, totals) in db.files.iter().zip(&st.files) {
                points.push(Point {
                    attrs: vec![
                        kv_str("physical_filename", &file.physical),
                        kv_str("logical_filename", &file.logical),
                        kv_str("file_type", file.file_type),
                        kv_str("direction", direction),
                    ],
                    value: pick(totals, dir_idx),
                });
            }
        }
        points
    };
    vec![
        one("sqlserver.transaction.rate", transactions),
        one(
            "sqlserver.transaction_log.usage",
            Num::I(st.log_shown as i64),
        ),
        one(
            "sqlserver.transaction_log.growth.count",
            Num::I(st.log_growths),
        ),
        metric(
            "sqlserver.database.io",
            per_file(&|t, d| Num::I(t.bytes[d] as i64 / 512 * 512)),
            stamp,
        ),
        metric(
            "sqlserver.database.latency",
            per_file(&|t, d| Num::F(round3(t.stall_s[d]))),
            stamp,
        ),
        metric(
            "sqlserver.database.operations",
            per_file(&|t, d| Num::I(t.ops[d] as i64)),
            stamp,
        ),
    ]
}

fn resource_block(p: &Profile, database: Option<&str>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource(&p.host, &p.name, database)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}
