//! `sqlvigil run --config FILE`: the pipeline and the API from a config file.

use crate::Overrides;
use anyhow::{Context as _, Result};
use sqlvigil_runtime::serve::serve;
use sqlvigil_runtime::Config;
use std::path::Path;

pub async fn run(config: &Path, overrides: &Overrides) -> Result<()> {
    let mut cfg = Config::load(config).with_context(|| format!("loading {}", config.display()))?;
    overrides.apply(&mut cfg);
    cfg.validate()?;
    Ok(serve(cfg, None).await?)
}
