//! What the bridge must not forget across restarts, in one redb file: the alerts it has seen
//! (dedup, and the target of later updates), where each was posted, the outbox of messages not
//! yet delivered, and the CAP-out feed.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::render::Summary;

/// CAP reference key (`sender,identifier,sent`) → [`AlertRecord`] (JSON).
const ALERTS: TableDefinition<&str, &str> = TableDefinition::new("alerts");
/// `root key \n room` → event id of the posted original.
const POSTED: TableDefinition<&str, &str> = TableDefinition::new("posted");
/// Sequence → [`Job`] (JSON), delivered in order.
const OUTBOX: TableDefinition<u64, &str> = TableDefinition::new("outbox");
/// Sequence → [`FeedEntry`] (JSON): alarms raised in watched rooms, served as CAP.
const FEED: TableDefinition<u64, &str> = TableDefinition::new("feed");
/// Small named values: HTTP validators of polled sources, the sync token of CAP-out.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bridge store: {0}")]
    Db(#[from] redb::Error),
    #[error("bridge store: a record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(impl From<$t> for StoreError { fn from(e: $t) -> Self { StoreError::Db(e.into()) } })*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

pub type Result<T> = std::result::Result<T, StoreError>;

/// An alert the bridge accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The key of the original alert this one updates or cancels (its own key for an Alert).
    pub root: String,
    pub alarm_id: String,
    pub summary: Summary,
    /// Room aliases the original went to.
    pub rooms: Vec<String>,
    pub cancelled: bool,
}

/// A message waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub root: String,
    pub room: String,
    pub kind: JobKind,
    /// The message content (for an edit: the new content).
    pub content: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    Post,
    Edit,
}

/// One alarm served on the CAP-out feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Matrix event id of the alarm (of the edit, for updates and cancels).
    pub event_id: String,
    pub room_id: String,
    /// The CAP identifier (the document is served as `/cap/alerts/<identifier>.xml`).
    pub identifier: String,
    /// The CAP 1.2 document.
    pub xml: String,
    /// Its `sent`, RFC 3339.
    pub updated: String,
    pub title: String,
}

pub struct Store {
    db: Database,
}

fn posted_key(root: &str, room: &str) -> String {
    format!("{root}\n{room}")
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        // Create every table once, so reads never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(ALERTS)?;
        tx.open_table(POSTED)?;
        tx.open_table(OUTBOX)?;
        tx.open_table(FEED)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Store { db })
    }

    pub fn alert(&self, key: &str) -> Result<Option<AlertRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ALERTS)?;
        match t.get(key)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// Records an accepted alert and queues its messages, in one transaction: after a crash
    /// either both are there or neither.
    pub fn accept(&self, key: &str, record: &AlertRecord, jobs: &[Job]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut alerts = tx.open_table(ALERTS)?;
            alerts.insert(key, serde_json::to_string(record)?.as_str())?;
            let mut outbox = tx.open_table(OUTBOX)?;
            let first = outbox.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            for (seq, job) in (first..).zip(jobs) {
                outbox.insert(seq, serde_json::to_string(job)?.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks the root alert cancelled (later updates to it are not posted).
    pub fn set_cancelled(&self, root: &str) -> Result<()> {
        let Some(mut rec) = self.alert(root)? else { return Ok(()) };
        rec.cancelled = true;
        let tx = self.db.begin_write()?;
        tx.open_table(ALERTS)?.insert(root, serde_json::to_string(&rec)?.as_str())?;
        tx.commit()?;
        Ok(())
    }

    /// The oldest undelivered job.
    pub fn next_job(&self) -> Result<Option<(u64, Job)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(OUTBOX)?;
        match t.first()? {
            Some((k, v)) => Ok(Some((k.value(), serde_json::from_str(v.value())?))),
            None => Ok(None),
        }
    }

    pub fn outbox_len(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(OUTBOX)?.len()?)
    }

    /// A job was delivered (or given up): drop it, and remember where an original went.
    pub fn job_done(&self, seq: u64, posted: Option<(&Job, &str)>) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(OUTBOX)?.remove(seq)?;
            if let Some((job, event_id)) = posted
                && job.kind == JobKind::Post
            {
                tx.open_table(POSTED)?.insert(posted_key(&job.root, &job.room).as_str(), event_id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The event id of an original alarm in a room.
    pub fn posted(&self, root: &str, room: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(POSTED)?;
        Ok(t.get(posted_key(root, room).as_str())?.map(|v| v.value().to_owned()))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(META)?.get(key)?.map(|v| v.value().to_owned()))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds an alarm to the CAP-out feed, once per event.
    pub fn add_feed(&self, entry: &FeedEntry) -> Result<()> {
        let seen_key = format!("feed-event\n{}", entry.event_id);
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            if meta.get(seen_key.as_str())?.is_some() {
                return Ok(());
            }
            meta.insert(seen_key.as_str(), "")?;
            let mut feed = tx.open_table(FEED)?;
            let next = feed.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            feed.insert(next, serde_json::to_string(entry)?.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` feed entries, newest first.
    pub fn feed(&self, limit: usize) -> Result<Vec<FeedEntry>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FEED)?;
        let mut out = Vec::new();
        for item in t.iter()?.rev().take(limit) {
            let (_, v) = item?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }

    /// The feed entry with a CAP identifier.
    pub fn feed_by_identifier(&self, identifier: &str) -> Result<Option<FeedEntry>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FEED)?;
        for item in t.iter()? {
            let (_, v) = item?;
            let entry: FeedEntry = serde_json::from_str(v.value())?;
            if entry.identifier == identifier {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// The feed entry for a Matrix event (to build CAP references for edits).
    pub fn feed_by_event(&self, event_id: &str) -> Result<Option<FeedEntry>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FEED)?;
        for item in t.iter()? {
            let (_, v) = item?;
            let entry: FeedEntry = serde_json::from_str(v.value())?;
            if entry.event_id == event_id {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}
