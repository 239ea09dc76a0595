//! `sqlvigil token create`: an API token, printed once (only its hash is stored).

use anyhow::{bail, Result};
use clap::Subcommand;
use sqlvigil_store::{Role, StateStore};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only its hash is stored).
    Create {
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

pub fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            role,
            data_dir,
            name,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("unknown role {role}")
            };
            let state = StateStore::open(&data_dir)?;
            println!("{}", state.create_token(role, &name)?);
            Ok(())
        }
    }
}
