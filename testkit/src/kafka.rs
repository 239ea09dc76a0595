//! A real Kafka-protocol broker on loopback for tests: tansu 0.6 with its in-memory
//! storage engine (`cargo install tansu --version 0.6.0 --features dynostore`; `.ci/run`
//! installs it when absent). The in-memory engine loses everything when the process
//! ends, so an outage is simulated by pausing the broker (SIGSTOP / SIGCONT).

use crate::TestkitError;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker, killed on drop.
pub struct KafkaBroker {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `$TANSU`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/tansu");
        p.is_file().then_some(p)
    })
}

impl KafkaBroker {
    /// Start a broker on a free loopback port; panics with the install command when
    /// tansu is missing (tests that need Kafka fail loudly, they never skip).
    pub fn start() -> KafkaBroker {
        match Self::try_start() {
            Ok(b) => b,
            Err(e) => panic!("Kafka test broker: {e}"),
        }
    }

    /// Start a broker, or say why not (tansu missing, no port): for callers that report
    /// instead of panicking (the benchmarks).
    pub fn try_start() -> Result<KafkaBroker, TestkitError> {
        let tansu = tansu_path().ok_or_else(|| {
            TestkitError::Missing(
                "tansu (a Kafka-compatible broker) is not installed: run \
                 `cargo install tansu --version 0.6.0 --features dynostore`"
                    .into(),
            )
        })?;
        let port = crate::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let dir =
            tempfile::tempdir().map_err(|e| TestkitError::Missing(format!("tempdir: {e}")))?;
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log)
            .map_err(|e| TestkitError::Missing(format!("{}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| TestkitError::Missing(format!("log: {e}")))?;
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| TestkitError::Missing(format!("starting {}: {e}", tansu.display())))?;
        let broker = KafkaBroker {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(TestkitError::Missing(format!(
                    "tansu did not listen on {port} within 15 s: {}",
                    broker.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, the `bootstrap.servers` value.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Freeze the broker: connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The last lines the broker logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
