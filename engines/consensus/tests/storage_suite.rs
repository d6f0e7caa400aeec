//! openraft's own storage conformance suite against Basalt's log store and state machine on a
//! real (fsync'd) fjall store: votes, appends, truncation, purging, membership tracking,
//! snapshots.

use std::time::Duration;

use basalt_consensus::{LogStore, SmStore, TypeConfig};
use basalt_runtime::Store;
use basalt_runtime::config::FsyncPolicy;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SmStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, SmStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), FsyncPolicy::Always, Duration::from_millis(100)).expect("store opens");
        let log = LogStore::new(store.namespace("raft_log").expect("namespace"), Some(1));
        let sm = SmStore::new(store.namespace("raft_sm").expect("namespace"), log.durability());
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
