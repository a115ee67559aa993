//! The record store: signed records by NodeId in an embedded redb database (a file, or memory for
//! development), so that a restart loses nothing.
//!
//! Writes go through one writer thread that commits whatever has queued up in one transaction (one fsync
//! for a burst of publishes, not one each); each write checks, inside that transaction, that the record
//! is newer than the stored one. Reads are redb snapshots, safe from any thread and never blocked by
//! the writer.

use std::{
    path::Path,
    sync::{Arc, mpsc as std_mpsc},
    time::Duration,
};

use iroh_base::NodeId;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::protos::discovery::SignedRecord;

/// NodeId bytes to the whole signed record (`key | signature | timestamp | packet`).
const RECORDS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("records");
/// The most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// redb's page cache: enough for a few hundred thousand records to stay hot, bounded whatever the file
/// size (redb's default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    /// Stored: `new` when the node had no record, else it replaced an older one.
    Stored {
        /// Whether the node had no record before.
        new: bool,
    },
    /// Not newer than the stored record: refused.
    NotNewer,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or a transaction failed.
    #[error("record database: {0}")]
    Db(#[from] Box<redb::Error>),
    /// A batch of writes failed (logged once by the writer, with the cause).
    #[error("the record store could not write")]
    WriteFailed,
    /// The writer thread is gone (the store is shutting down).
    #[error("the record store is closed")]
    Closed,
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(error.into()))
}

struct Write {
    record: SignedRecord,
    reply: oneshot::Sender<Result<PutOutcome, StoreError>>,
}

/// The store: see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    db: Arc<Database>,
    writes: std_mpsc::SyncSender<Write>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database at `path`, or an in-memory one without a path.
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let db = match path {
            Some(path) => {
                // New files in the v3 format, which later redb versions read.
                builder.create_with_file_format_v3(true);
                builder.create(path).map_err(db_error)?
            }
            None => builder
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(db_error)?,
        };
        let tx = db.begin_write().map_err(db_error)?;
        tx.open_table(RECORDS).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        let db = Arc::new(db);
        let (writes, rx) = std_mpsc::sync_channel(MAX_BATCH * 4);
        let writer_db = Arc::clone(&db);
        let handle = std::thread::Builder::new()
            .name("discovery-store".into())
            .spawn(move || writer(&writer_db, &rx))
            .map_err(db_error)?;
        Ok(Self {
            db,
            writes,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Closes the database (releasing its file lock) once this is the last handle: stops the writer
    /// after the writes queued so far. Blocking.
    pub(crate) fn close(self) {
        let Self { db, writes, writer } = self;
        drop(writes);
        let handle = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            warn!("the record store writer panicked");
        }
        drop(db);
    }

    /// Stores `record` if it is newer than the stored one.
    pub(crate) async fn put(&self, record: SignedRecord) -> Result<PutOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let writes = self.writes.clone();
        // The channel is bounded: a full queue blocks this (blocking-pool) thread, not the runtime.
        tokio::task::spawn_blocking(move || writes.send(Write { record, reply }))
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The stored record of `node`. A read of redb's cache (or a page read): fast enough to call
    /// from async code.
    pub(crate) fn get(&self, node: &NodeId) -> Result<Option<SignedRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RECORDS).map_err(db_error)?;
        let Some(value) = table.get(node.as_bytes()).map_err(db_error)? else {
            return Ok(None);
        };
        match SignedRecord::from_verified_bytes(value.value()) {
            Some(record) => Ok(Some(record)),
            None => {
                warn!(node = %node.fmt_short(), "a stored record is malformed; ignoring it");
                Ok(None)
            }
        }
    }

    /// The stored bytes of the record under key bytes `key` (not checked to be a valid key: a key that
    /// is not one was never stored), without parsing them.
    pub(crate) fn get_raw(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RECORDS).map_err(db_error)?;
        Ok(table
            .get(key)
            .map_err(db_error)?
            .map(|v| v.value().to_vec()))
    }

    /// How many records are stored.
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RECORDS).map_err(db_error)?;
        table.len().map_err(db_error)
    }

    /// Removes every record signed before `cutoff` (microseconds since the Unix epoch); returns how
    /// many. Blocking: run it on a blocking thread.
    pub(crate) fn evict_older_than(&self, cutoff: u64) -> Result<u64, StoreError> {
        let stale: Vec<[u8; 32]> = {
            let tx = self.db.begin_read().map_err(db_error)?;
            let table = tx.open_table(RECORDS).map_err(db_error)?;
            let mut stale = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, value) = entry.map_err(db_error)?;
                // The timestamp alone: parsing each key would be a curve point decompression per
                // record, seconds for a million.
                let keep = SignedRecord::timestamp_of(value.value()).is_some_and(|ts| ts >= cutoff);
                if !keep {
                    stale.push(*key.value());
                }
            }
            stale
        };
        if stale.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write().map_err(db_error)?;
        let mut removed = 0;
        {
            let mut table = tx.open_table(RECORDS).map_err(db_error)?;
            for key in &stale {
                // Re-checked inside the write: a fresh publish may have replaced it since the scan.
                let still_stale = match table.get(key).map_err(db_error)? {
                    Some(value) => {
                        SignedRecord::timestamp_of(value.value()).is_none_or(|ts| ts < cutoff)
                    }
                    None => false,
                };
                if still_stale {
                    table.remove(key).map_err(db_error)?;
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(db_error)?;
        Ok(removed)
    }
}

/// The writer thread: takes a write, then whatever else is queued (up to [`MAX_BATCH`]), applies them
/// in one transaction and answers each. Ends when every sender is gone.
fn writer(db: &Database, rx: &std_mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match apply(db, &batch) {
            Ok(outcomes) => {
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    write.reply.send(Ok(outcome)).ok();
                }
            }
            Err(error) => {
                warn!(%error, writes = batch.len(), "record store write failed");
                for write in batch {
                    write.reply.send(Err(StoreError::WriteFailed)).ok();
                }
                // A failing disk: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    debug!("record store writer stopped");
}

fn apply(db: &Database, batch: &[Write]) -> Result<Vec<PutOutcome>, StoreError> {
    let tx = db.begin_write().map_err(db_error)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut table = tx.open_table(RECORDS).map_err(db_error)?;
        for write in batch {
            let key = write.record.node_id();
            let newer = match table.get(key.as_bytes()).map_err(db_error)? {
                Some(stored) => SignedRecord::timestamp_of(stored.value())
                    .is_none_or(|stored| write.record.timestamp() > stored),
                None => true,
            };
            if newer {
                let replaced = table
                    .insert(key.as_bytes(), write.record.as_bytes())
                    .map_err(db_error)?
                    .is_some();
                outcomes.push(PutOutcome::Stored { new: !replaced });
            } else {
                outcomes.push(PutOutcome::NotNewer);
            }
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(outcomes)
}
