//! `sqlvigil token create|list|revoke`: API tokens by hand. A new token is printed once
//! (only a salted hash is stored); the list never shows secrets.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sqlvigil_store::{Role, StateStore, TokenSpec};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the last line; only its salted hash is stored).
    Create {
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Valid for this long (`30d`, `12h`); forever if not given.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Scope the token to these instances (comma-separated): it never sees others.
        #[arg(long, value_delimiter = ',')]
        instances: Option<Vec<String>>,
    },
    /// Every token: id, name, role, created, expiry, revocation (JSON; no secrets).
    List {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Revoke the token `id` (from `token list`); it is refused from then on.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        id: String,
    },
}

pub fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            role,
            data_dir,
            name,
            expires_in,
            instances,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("unknown role {role}")
            };
            let expires_at = expires_in
                .map(|d| {
                    chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                        .context("--expires-in is too far in the future")
                })
                .transpose()?;
            let spec = TokenSpec {
                expires_at,
                instances,
                ..TokenSpec::new(role, &name)
            };
            if let Some(problem) = spec.problem() {
                bail!("{problem}");
            }
            let made = StateStore::open(&data_dir)?.create_token(&spec)?;
            eprintln!(
                "token {} ({}, {}{}{}); shown once:",
                made.info.id,
                made.info.name,
                role.as_str(),
                expires_at.map_or(String::new(), |t| format!(", expires {}", t.to_rfc3339())),
                spec.instances
                    .map_or(String::new(), |l| format!(", instances {}", l.join(",")))
            );
            println!("{}", made.token);
        }
        TokenCommand::List { data_dir } => {
            let tokens = StateStore::open(&data_dir)?.tokens()?;
            println!("{}", serde_json::to_string_pretty(&tokens)?);
        }
        TokenCommand::Revoke { data_dir, id } => {
            match StateStore::open(&data_dir)?.revoke_token(&id)? {
                Some(t) => println!("{}", serde_json::to_string_pretty(&t)?),
                None => bail!("no token `{id}` (see `sqlvigil token list`)"),
            }
        }
    }
    Ok(())
}
