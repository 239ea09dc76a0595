//! Operator snapshots through a real Kafka-protocol broker (tansu, from testkit): the
//! latest snapshot per partition comes back, whichever process wrote it.

use sqlvigil_bus::kafka::{KafkaCheckpoints, KafkaConfig};
use sqlvigil_core::{CheckpointStore, Snapshot};
use sqlvigil_testkit::KafkaBroker;

fn snapshot(partition: u32, next_offset: u64, marker: &str) -> Snapshot {
    let mut operators = serde_json::Map::new();
    operators.insert("rules".into(), serde_json::json!({ "marker": marker }));
    Snapshot {
        topic: "otlp_metrics".into(),
        partition,
        next_offset,
        operators,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_latest_snapshot_of_each_partition_comes_back() {
    let broker = KafkaBroker::start();
    let config = KafkaConfig {
        brokers: broker.bootstrap(),
        partitions: 2,
        ..KafkaConfig::default()
    };
    let writer = KafkaCheckpoints::connect(&config, "sqlvigil.checkpoints")
        .await
        .expect("checkpoint topic");
    assert_eq!(writer.load("otlp_metrics", 3).await.expect("load"), None);
    // Partitions 1 and 3 share checkpoint partition 1; 40 records push the first
    // snapshot of partition 1 beyond one backward scan step.
    writer
        .save(&[snapshot(1, 10, "p1-old")])
        .await
        .expect("save");
    for i in 0..40 {
        writer
            .save(&[snapshot(3, 100 + i, "p3")])
            .await
            .expect("save");
    }
    writer.save(&[snapshot(0, 7, "p0")]).await.expect("save");
    // A late write from a process that had lost the partition (lower offset) loses.
    writer
        .save(&[snapshot(3, 50, "stale")])
        .await
        .expect("save");

    let reader = KafkaCheckpoints::connect(&config, "sqlvigil.checkpoints")
        .await
        .expect("second process");
    assert_eq!(
        reader.load("otlp_metrics", 1).await.expect("load"),
        Some(snapshot(1, 10, "p1-old"))
    );
    assert_eq!(
        reader.load("otlp_metrics", 3).await.expect("load"),
        Some(snapshot(3, 139, "p3"))
    );
    assert_eq!(
        reader.load("otlp_metrics", 0).await.expect("load"),
        Some(snapshot(0, 7, "p0"))
    );
    assert_eq!(reader.load("otlp_logs", 0).await.expect("load"), None);
}
