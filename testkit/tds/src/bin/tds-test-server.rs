//! `tds-test-server`: runs the TDS test server until killed.
//!
//! ```text
//! tds-test-server [--addr 127.0.0.1:0] [--fixtures DIR] [--encryption not-supported|off|on]
//!                 [--user NAME:PASSWORD]... [--fail-logins]
//! ```
//! Prints `listening on 127.0.0.1:PORT` and `ca <path>` on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use sqlvigil_testkit_tds::{Encryption, TdsConfig, TdsServer};

const USAGE: &str = "usage: tds-test-server [--addr 127.0.0.1:0] [--fixtures DIR] \
[--encryption not-supported|off|on] [--user NAME:PASSWORD]... [--fail-logins]";

fn parse_args() -> Result<TdsConfig, String> {
    let mut config = TdsConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                config.bind_addr = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--addr {v}: {e}"))?;
            }
            "--fixtures" => config.fixtures_dir = Some(PathBuf::from(value("--fixtures")?)),
            "--encryption" => {
                config.encryption = match value("--encryption")?.as_str() {
                    "not-supported" => Encryption::NotSupported,
                    "off" => Encryption::Off,
                    "on" => Encryption::On,
                    other => {
                        return Err(format!(
                            "--encryption {other}: expected not-supported, off or on"
                        ))
                    }
                }
            }
            "--user" => {
                let v = value("--user")?;
                let (user, password) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--user {v}: expected NAME:PASSWORD"))?;
                config.users.push((user.to_string(), password.to_string()));
            }
            "--fail-logins" => config.fail_logins = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let server = match TdsServer::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tds-test-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", server.addr());
    let _ = writeln!(out, "ca {}", server.ca_path().display());
    let _ = out.flush();
    drop(out);
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
