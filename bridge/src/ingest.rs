//! An accepted alert becomes messages in the outbox: dedup, expiry, routing, and for Update and
//! Cancel the edits of the original alarm in every room it went to (`references` followed
//! back to the original, also through earlier updates).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tocsin_policies::BridgeRoute;
use tokio::sync::Notify;
use tracing::info;

use crate::cap::signature::Verifier;
use crate::cap::{Alert, MsgType};
use crate::metrics::Metrics;
use crate::render;
use crate::store::{AlertRecord, Job, JobKind, Store, StoreError};

/// What happened to an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Messages queued for these rooms.
    Queued { rooms: Vec<String> },
    /// Seen before (same sender, identifier and sent; from any source).
    Duplicate,
    /// Already expired when it arrived: not posted.
    Expired,
    /// No route matched.
    Unrouted,
    /// Nothing to post: an Ack or Error message, or an update to a cancelled alert.
    Ignored,
}

pub struct Ingest {
    /// Sources whose CAP documents must be signed, with the certificates they trust.
    signatures: HashMap<String, Verifier>,
    store: Arc<Store>,
    routes: Vec<BridgeRoute>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl Ingest {
    pub fn new(store: Arc<Store>, routes: Vec<BridgeRoute>, metrics: Arc<Metrics>, wake: Arc<Notify>) -> Self {
        Ingest { signatures: HashMap::new(), store, routes, metrics, wake }
    }

    /// Requires XML signatures on the CAP documents of these sources.
    pub fn require_signatures(mut self, signatures: HashMap<String, Verifier>) -> Self {
        self.signatures = signatures;
        self
    }

    /// The certificates `source`'s documents must be signed with, if it requires signatures.
    pub fn verifier(&self, source: &str) -> Option<&Verifier> {
        self.signatures.get(source)
    }

    /// The rooms some route names, each once, in route order.
    pub fn rooms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.routes {
            if !out.contains(&r.room) {
                out.push(r.room.clone());
            }
        }
        out
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Takes one valid alert from source `source`.
    pub fn alert(&self, source: &str, alert: &Alert, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        Metrics::inc(&self.metrics.alerts_in);
        let key = alert.reference_key();
        if self.store.alert(&key)?.is_some() {
            Metrics::inc(&self.metrics.deduplicated);
            info!(source, key, "duplicate alert dropped");
            return Ok(Outcome::Duplicate);
        }
        let outcome = match alert.msg_type {
            MsgType::Alert => self.new_alert(&key, alert, now)?,
            MsgType::Update | MsgType::Cancel => match self.original(alert)? {
                Some(root) => self.edit(&key, alert, root)?,
                // An update whose original the bridge never saw is news: post it.
                None => self.new_alert(&key, alert, now)?,
            },
            MsgType::Ack | MsgType::Error => {
                self.record_only(&key, alert)?;
                Outcome::Ignored
            }
        };
        info!(source, key, ?outcome, "alert taken in");
        if matches!(outcome, Outcome::Queued { .. }) {
            self.wake.notify_one();
        }
        Ok(outcome)
    }

    fn record_only(&self, key: &str, alert: &Alert) -> Result<(), StoreError> {
        let record = AlertRecord {
            root: key.to_owned(),
            alarm_id: render::alarm_id(key),
            summary: render::summary(alert),
            rooms: Vec::new(),
            cancelled: false,
        };
        self.store.accept(key, &record, &[])
    }

    fn new_alert(&self, key: &str, alert: &Alert, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        if alert.expires().is_some_and(|e| e <= now) {
            Metrics::inc(&self.metrics.expired);
            self.record_only(key, alert)?;
            return Ok(Outcome::Expired);
        }
        let rooms = crate::route::rooms_for(&self.routes, alert);
        if rooms.is_empty() {
            Metrics::inc(&self.metrics.unrouted);
            self.record_only(key, alert)?;
            return Ok(Outcome::Unrouted);
        }
        let summary = render::summary(alert);
        let alarm_id = render::alarm_id(key);
        let block = render::block(alert, &summary, &alarm_id);
        let content = render::new_message(&block, &summary);
        let jobs: Vec<Job> = rooms
            .iter()
            .map(|room| Job { root: key.to_owned(), room: room.clone(), kind: JobKind::Post, content: content.clone() })
            .collect();
        let record = AlertRecord { root: key.to_owned(), alarm_id, summary, rooms: rooms.clone(), cancelled: false };
        self.store.accept(key, &record, &jobs)?;
        Ok(Outcome::Queued { rooms })
    }

    /// The record of the latest referenced message the bridge knows, if any.
    fn original(&self, alert: &Alert) -> Result<Option<AlertRecord>, StoreError> {
        for r in alert.references.iter().rev() {
            if let Some(rec) = self.store.alert(&r.key())? {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    fn edit(&self, key: &str, alert: &Alert, previous: AlertRecord) -> Result<Outcome, StoreError> {
        let Some(root) = self.store.alert(&previous.root)? else {
            return Ok(Outcome::Ignored);
        };
        let summary = render::summary(alert);
        let record = AlertRecord {
            root: previous.root.clone(),
            alarm_id: root.alarm_id.clone(),
            summary: summary.clone(),
            rooms: root.rooms.clone(),
            cancelled: alert.msg_type == MsgType::Cancel,
        };
        if root.cancelled || root.rooms.is_empty() {
            self.store.accept(key, &record, &[])?;
            return Ok(Outcome::Ignored);
        }
        let block = render::block(alert, &summary, &root.alarm_id);
        let content = if alert.msg_type == MsgType::Cancel {
            let reason = alert.note.as_deref().or(alert.infos.first().and_then(|i| i.description.as_deref()));
            render::cancel_message(&block, &summary, reason)
        } else {
            render::update_message(&block, &summary, &render::changes(&previous.summary, &summary))
        };
        let jobs: Vec<Job> = root
            .rooms
            .iter()
            .map(|room| Job {
                root: previous.root.clone(),
                room: room.clone(),
                kind: JobKind::Edit,
                content: content.clone(),
            })
            .collect();
        self.store.accept(key, &record, &jobs)?;
        if alert.msg_type == MsgType::Cancel {
            self.store.set_cancelled(&previous.root)?;
        }
        Ok(Outcome::Queued { rooms: root.rooms })
    }
}
