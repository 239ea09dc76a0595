//! `sqlvigil validate FILE`: check a config file without running it, and say which
//! rules cannot fire in which receiver mode (platform gaps).

use anyhow::Result;
use sqlvigil_runtime::Config;
use std::path::Path;

pub fn validate(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let rules = cfg.effective_rules()?;
    println!("{}: ok ({} rules)", config.display(), rules.len());
    for gap in cfg.coverage_gaps()? {
        println!("note: {}", gap.reason);
    }
    Ok(())
}
