//! What each running part of the pipeline is doing, so `/health`, `/ready`, `/metrics`
//! and the receiver can tell the truth about it.
//!
//! Every part (a receiver, a worker, the sink, the analytics stage) registers a
//! [`Component`] and reports on it: running or not (and why), progress, the input
//! waiting for it and its limit. [`Health::report`] turns that into verdicts:
//!
//! - **live** (`/health`): no part is stopped for good, failing over and over, or
//!   stalled (input waiting, no progress for `stall_after`) — a restart of the process
//!   is what would help;
//! - **ready** (`/ready`): live, every part running (none restarting after a failure),
//!   and no backlog over its limit — the process can take more work now.
//!
//! The receiver refuses data ([`Health::refusal`]) while a part that must process it is
//! down: a client told "accepted" while nothing moves it on would be lied to.

use serde::Serialize;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Failures in a row after which a restarting part counts as down for good (not live).
pub const FAILURES_UNTIL_DEAD: u64 = 3;
/// A part that failed counts as recovered after running this long with progress
/// (the default; see [`Health::with_recovered_after`]).
pub const RECOVERED_AFTER: Duration = Duration::from_secs(10);

/// The state a part reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum State {
    Starting,
    Running,
    /// Failed and waiting to be started again.
    Restarting(String),
    /// Stopped and will not start again (shutdown, or a failure that is final).
    Stopped(String),
}

/// One part of the pipeline, as it reports itself.
#[derive(Debug)]
pub struct Component {
    pub name: String,
    /// Whether the receiver must refuse data while this part is not running.
    pub gates_ingest: bool,
    state: Mutex<State>,
    /// What it is waiting for right now, if anything (e.g. room on a topic).
    waiting: Mutex<Option<String>>,
    born: Instant,
    /// Milliseconds since `born` of the last progress.
    progress_ms: AtomicU64,
    backlog: AtomicU64,
    /// Backlog above which the part is not ready (0: no limit).
    backlog_limit: u64,
    failures_in_a_row: AtomicU64,
    /// Why it failed last (while `failures_in_a_row > 0`).
    last_failure: Mutex<Option<String>>,
    /// Milliseconds since `born` of the last (re)start.
    started_ms: AtomicU64,
    /// Running this long with progress after a failure counts as recovered.
    recovered_after: Duration,
    restarts: AtomicU64,
    stopping: AtomicBool,
}

impl Component {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_state(&self, s: State) {
        *Self::lock(&self.state) = s;
    }

    pub fn state(&self) -> State {
        Self::lock(&self.state).clone()
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Started (again): running, progress now.
    pub fn running(&self) {
        self.started_ms.store(self.now_ms(), Ordering::Relaxed);
        self.set_state(State::Running);
        self.progress();
    }

    /// Did some work: resets the stall clock, and the run of failures once it has been
    /// running for [`RECOVERED_AFTER`] since its last start.
    pub fn progress(&self) {
        let now = self.now_ms();
        self.progress_ms.store(now, Ordering::Relaxed);
        let started = self.started_ms.load(Ordering::Relaxed);
        if now.saturating_sub(started) >= self.recovered_after.as_millis() as u64
            && self.failures_in_a_row.load(Ordering::Relaxed) > 0
        {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            *Self::lock(&self.last_failure) = None;
        }
    }

    /// Failed with `reason`; the supervisor will start it again.
    pub fn failed(&self, reason: &str) {
        self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        *Self::lock(&self.last_failure) = Some(reason.to_string());
        self.set_state(State::Restarting(reason.to_string()));
    }

    /// Running again after a failure, not yet for [`RECOVERED_AFTER`]: the failure's
    /// count and reason.
    fn recovering(&self) -> Option<(u64, String)> {
        let n = self.failures_in_a_row.load(Ordering::Relaxed);
        (n > 0).then(|| {
            (
                n,
                Self::lock(&self.last_failure).clone().unwrap_or_default(),
            )
        })
    }

    /// Stopped for good (`reason`: why).
    pub fn stopped(&self, reason: &str) {
        self.set_state(State::Stopped(reason.to_string()));
    }

    /// Shutdown has begun: a stop now is expected, not a fault.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn set_backlog(&self, n: u64) {
        self.backlog.store(n, Ordering::Relaxed);
    }

    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// What it waits for (`None`: nothing).
    pub fn waiting(&self, on: Option<String>) {
        *Self::lock(&self.waiting) = on;
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// What is wrong with the part now (its backlog limit aside), if anything.
    fn trouble(&self, state: &State, stalled: bool) -> Option<Trouble> {
        let failures = self.failures_in_a_row.load(Ordering::Relaxed);
        let (text, fatal) = match state {
            State::Starting => ("starting".to_string(), false),
            State::Running if stalled => {
                let on = Component::lock(&self.waiting)
                    .as_deref()
                    .map(|w| format!(" (waiting for {w})"))
                    .unwrap_or_default();
                let text = format!(
                    "stalled: no progress for {}s with {} waiting{on}",
                    self.since_progress().as_secs(),
                    self.backlog()
                );
                (text, true)
            }
            State::Running => {
                let (n, why) = self.recovering()?;
                let text = format!(
                    "restarted after {n} failure(s) in a row, not yet running for {:?}: {why}",
                    self.recovered_after
                );
                (text, n >= FAILURES_UNTIL_DEAD)
            }
            State::Restarting(why) => (
                format!("failed {failures} time(s) in a row, restarting: {why}"),
                failures >= FAILURES_UNTIL_DEAD,
            ),
            State::Stopped(why) => (
                format!("stopped: {why}"),
                !self.stopping.load(Ordering::Relaxed),
            ),
        };
        Some(Trouble { text, fatal })
    }

    fn since_progress(&self) -> Duration {
        let last = self.progress_ms.load(Ordering::Relaxed);
        Duration::from_millis((self.born.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

/// A part's problem: what to say, and whether it makes the process not live.
struct Trouble {
    text: String,
    fatal: bool,
}

/// One part in a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub name: String,
    #[serde(flatten)]
    pub state: State,
    /// Running, and nothing about it makes the process not live: a part that runs
    /// between failures that come over and over is not up, whatever instant is read.
    pub up: bool,
    /// Input waiting for it (records, rows or anomalies, by part).
    pub backlog: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_limit: Option<u64>,
    pub seconds_since_progress: f64,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub stalled: bool,
    pub over_limit: bool,
}

/// Every part's state and the verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub live: bool,
    pub ready: bool,
    /// Why not live or not ready, one line per problem, naming the part.
    pub problems: Vec<String>,
    pub components: Vec<ComponentReport>,
}

/// The registry of parts (see the module docs).
#[derive(Debug)]
pub struct Health {
    components: RwLock<Vec<Arc<Component>>>,
    stall_after: Duration,
    recovered_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Duration::from_secs(60))
    }
}

impl Health {
    /// A part is stalled after `stall_after` without progress while input waits.
    pub fn new(stall_after: Duration) -> Self {
        Health {
            components: RwLock::new(Vec::new()),
            stall_after,
            recovered_after: RECOVERED_AFTER,
        }
    }

    /// After a failure, how long a part must run with progress to count as recovered
    /// (default [`RECOVERED_AFTER`]); applies to parts registered after.
    pub fn with_recovered_after(mut self, d: Duration) -> Self {
        self.recovered_after = d;
        self
    }

    /// Add a part (`backlog_limit` 0: none). Starts as `Starting`.
    pub fn register(&self, name: &str, gates_ingest: bool, backlog_limit: u64) -> Arc<Component> {
        let c = Arc::new(Component {
            name: name.to_string(),
            gates_ingest,
            state: Mutex::new(State::Starting),
            waiting: Mutex::new(None),
            born: Instant::now(),
            progress_ms: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            backlog_limit,
            failures_in_a_row: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            started_ms: AtomicU64::new(0),
            recovered_after: self.recovered_after,
            restarts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        self.components
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        c
    }

    /// Shutdown has begun: parts that stop now are not faults.
    pub fn stopping(&self) {
        for c in self.all() {
            c.stopping();
        }
    }

    fn all(&self) -> Vec<Arc<Component>> {
        self.components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every part judged now.
    pub fn report(&self) -> Report {
        let mut problems = Vec::new();
        let (mut live, mut ready) = (true, true);
        let mut components = Vec::new();
        for c in self.all() {
            let state = c.state();
            let backlog = c.backlog();
            let since = c.since_progress();
            let stalled = self.stalled(&c, &state);
            let over_limit = c.backlog_limit > 0 && backlog > c.backlog_limit;
            let waiting_for = Component::lock(&c.waiting).clone();
            let mut up = state == State::Running;
            if let Some(t) = c.trouble(&state, stalled) {
                ready = false;
                live &= !t.fatal;
                up &= !t.fatal;
                problems.push(format!("{}: {}", c.name, t.text));
            }
            if over_limit {
                ready = false;
                problems.push(format!(
                    "{}: backlog {backlog} over its limit {}",
                    c.name, c.backlog_limit
                ));
            }
            components.push(ComponentReport {
                name: c.name.clone(),
                state,
                up,
                backlog,
                backlog_limit: (c.backlog_limit > 0).then_some(c.backlog_limit),
                seconds_since_progress: since.as_secs_f64(),
                restarts: c.restarts(),
                waiting_for,
                stalled,
                over_limit,
            });
        }
        Report {
            live,
            ready,
            problems,
            components,
        }
    }

    /// Running, with input waiting and no progress for `stall_after`.
    fn stalled(&self, c: &Component, state: &State) -> bool {
        *state == State::Running && c.backlog() > 0 && c.since_progress() >= self.stall_after
    }

    /// Why the receiver must refuse data now, if it must: a part that processes it is
    /// not running, or stalled. `None`: accept. (Called per request: no report built.)
    pub fn refusal(&self) -> Option<String> {
        let components = self.components.read().unwrap_or_else(|p| p.into_inner());
        components.iter().filter(|c| c.gates_ingest).find_map(|c| {
            let state = c.state();
            let t = c.trouble(&state, self.stalled(c, &state))?;
            Some(format!("{} {}", c.name, t.text))
        })
    }

    /// Prometheus text: up, ready, backlog and restarts per part.
    pub fn render(&self) -> String {
        let r = self.report();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP sqlvigil_live 1 when no part is stopped, failing over and over or stalled."
        );
        let _ = writeln!(
            out,
            "# TYPE sqlvigil_live gauge\nsqlvigil_live {}",
            r.live as u8
        );
        let _ = writeln!(
            out,
            "# HELP sqlvigil_ready 1 when every part runs and no backlog is over its limit."
        );
        let _ = writeln!(
            out,
            "# TYPE sqlvigil_ready gauge\nsqlvigil_ready {}",
            r.ready as u8
        );
        type Field = fn(&ComponentReport) -> f64;
        let series: [(&str, &str, &str, Field); 4] = [
            (
                "component_up",
                "gauge",
                "1 while the part runs, is not stalled and is not failing over and over.",
                |c| c.up as u8 as f64,
            ),
            (
                "component_backlog",
                "gauge",
                "Input waiting for the part.",
                |c| c.backlog as f64,
            ),
            (
                "component_seconds_since_progress",
                "gauge",
                "Seconds since the part last made progress.",
                |c| c.seconds_since_progress,
            ),
            (
                "component_restarts_total",
                "counter",
                "Times the part failed and was started again.",
                |c| c.restarts as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP sqlvigil_{name} {help}");
            let _ = writeln!(out, "# TYPE sqlvigil_{name} {kind}");
            for c in &r.components {
                let label = prometheus_label(&c.name);
                let _ = writeln!(out, "sqlvigil_{name}{{component=\"{label}\"}} {}", value(c));
            }
        }
        out
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped (names are user text).
pub(crate) fn prometheus_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_parts() {
        let h =
            Health::new(Duration::from_millis(200)).with_recovered_after(Duration::from_millis(50));
        let w = h.register("metrics worker", true, 0);
        let a = h.register("analytics", false, 10);
        assert!(!h.report().ready, "starting parts are not ready");
        w.running();
        a.running();
        let r = h.report();
        assert!(r.live && r.ready, "{:?}", r.problems);
        assert_eq!(h.refusal(), None);

        a.set_backlog(11);
        let r = h.report();
        assert!(r.live && !r.ready);
        assert!(r.problems[0].contains("analytics: backlog 11 over its limit 10"));
        a.set_backlog(0);

        w.failed("disk full");
        let r = h.report();
        assert!(r.live && !r.ready);
        assert!(h.refusal().unwrap().contains("metrics worker failed"));
        w.failed("disk full");
        w.failed("disk full");
        assert!(!h.report().live, "three failures in a row are not live");
        w.running();
        let r = h.report();
        assert!(!r.live && !r.ready, "restarted, not yet recovered");
        assert!(
            h.render()
                .contains("sqlvigil_component_up{component=\"metrics worker\"} 0"),
            "running between failures over and over is not up"
        );
        assert!(h
            .refusal()
            .unwrap()
            .contains("restarted after 3 failure(s)"));
        // Recovered after running with progress for `recovered_after`.
        std::thread::sleep(Duration::from_millis(60));
        w.progress();
        assert!(h.report().ready, "{:?}", h.report().problems);

        // Input waiting and no progress for `stall_after`: stalled, not live.
        w.set_backlog(5);
        w.waiting(Some("room on topic `a`".into()));
        assert!(h.report().live, "not stalled before stall_after");
        std::thread::sleep(Duration::from_millis(250));
        let r = h.report();
        assert!(!r.live && !r.ready);
        assert!(
            r.problems[0].contains("waiting for room on topic `a`"),
            "{:?}",
            r.problems
        );
        assert!(h.refusal().unwrap().contains("stalled"));
        assert!(h
            .render()
            .contains("sqlvigil_component_up{component=\"metrics worker\"} 0"));

        // A stop during shutdown is expected: still live.
        w.set_backlog(0);
        w.stopping();
        w.stopped("shutdown");
        assert!(h.report().live);
    }
}
