//! The backend the topology builds from `elastic:` (`store.backend: elastic`): the sink
//! that writes to the cluster and the reader that reads it back.

use crate::config::ElasticConfig;
use crate::read::ElasticReader;
use crate::sink::ElasticSink;
use crate::Elastic;
use sqlvigil_core::{async_trait, Backend, Build, BuildContext, Result};
use std::sync::Arc;

#[async_trait]
impl Build for ElasticConfig {
    /// The sink (disk queue → `_bulk`) and the bridge reader over the same cluster.
    type Output = Backend;

    fn validate(&self) -> Result<()> {
        ElasticConfig::validate(self)
    }

    /// Open the disk queue, install the index layout (in the background while the
    /// cluster is unreachable; a conflicting layout fails here) and start shipping.
    async fn build(&self, ctx: &BuildContext) -> Result<Backend> {
        let es = Elastic::connect(&self.connection())?;
        let sink = ElasticSink::start(self, &ctx.data_dir, es.clone(), ctx.stats.clone()).await?;
        let reader = ElasticReader {
            es,
            options: self.read_options(),
            stats: ctx.stats.clone(),
        };
        Ok(Backend {
            sink,
            reader: Arc::new(reader),
        })
    }
}
