//! The escalation worker: one task per node that keeps every open alarm's status message
//! current and takes its escalation steps when they fall due.
//!
//! Steps, each recorded in the alarm's [`Progress`] (in the store) once taken:
//! 1. at the acknowledgement deadline, a reminder (as a reply to the alarm) mentioning exactly
//!    those who have not acknowledged, so their clients highlight and push it;
//! 2. `escalate_after` later (default: the deadline again), a message in the escalation room
//!    the policy sets for the alarm's room, else for the sender's role, else for the node
//!    ([`super::escalation`]), and the `[[alarms.webhook]]` calls queued in the same progress
//!    write.
//!
//! Every message the worker sends carries a transaction id derived from the alarm, so a crash
//! between sending and recording resends the same transaction, which the send path answers with
//! the event already made: a step is never repeated, and never skipped, across restarts.
//! Webhook calls are at least once (retried with backoff; the delivery header lets the receiver
//! drop a repeat).
//!
//! Status edits are coalesced: at most one per [`STATUS_EDIT_INTERVAL`] per alarm, whatever
//! the number of acknowledgements in between; the edit that closes the alarm goes out at once.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ruma::{OwnedEventId, OwnedUserId, events::TimelineEventType};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AlarmRecord, PendingCall, Progress, Step, escalation, txn, view::AlarmStatus, webhook};
use crate::{
    Services,
    error::{Error, Result},
    rooms::NewEvent,
    store::{Db, trees},
};

/// The least time between two edits of one status message.
pub const STATUS_EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a wake-up waits for more of the same burst before acting.
const COALESCE: Duration = Duration::from_millis(200);
/// The least time between the starts of two passes woken by events.
const BURST_PASS: Duration = Duration::from_millis(500);
/// The longest wait for the event that woke the worker to become durable.
const DURABLE_WAIT: Duration = Duration::from_secs(5);
/// The longest sleep while nothing is due (events also wake the worker).
const IDLE: Duration = Duration::from_secs(30);
/// After an error, the next try.
const RETRY: Duration = Duration::from_secs(5);
/// Users mentioned per reminder message (a PDU has at most 64 KiB).
const MENTIONS_PER_MESSAGE: usize = 200;

/// The result of one webhook call, sent back to the worker.
struct CallDone {
    alarm: OwnedEventId,
    index: usize,
    result: Result<u16>,
}

enum Woke {
    Event,
    Call(CallDone),
    Timer,
}

/// Starts the worker under the node's worker registry.
pub fn spawn(node: &Arc<Services>) {
    let services = node.clone();
    node.workers.spawn("alarm-escalation", |mut shutdown| async move {
        let wake = services.alarms.wake_handle();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallDone>();
        let mut in_flight: HashSet<(OwnedEventId, usize)> = HashSet::new();
        loop {
            let ticked = tokio::time::Instant::now();
            let wait = match tick(&services, &done_tx, &mut in_flight).await {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(crate::users::now_ms())).min(IDLE),
                Ok(None) => IDLE,
                Err(e) => {
                    tracing::warn!(error = %e, "alarm worker: a pass failed; retrying");
                    RETRY
                }
            };
            let woke = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = wake.notified() => Woke::Event,
                Some(done) = done_rx.recv() => Woke::Call(done),
                _ = tokio::time::sleep(wait) => Woke::Timer,
            };
            match woke {
                // The event that woke the worker carries its alarm rows in its own batch, which
                // a scan of the alarms sees only once durable: wait for that (a slow disk took
                // longer than the coalescing pause, and the new alarm then waited for the idle
                // timer), then let the rest of a burst land.
                Woke::Event => {
                    let written = services.db.streams.allocated();
                    let mut visible = services.db.streams.subscribe();
                    let _ = tokio::time::timeout(DURABLE_WAIT, visible.wait_for(|v| *v >= written)).await;
                    // A burst (thousands of reactions) is taken a pass at a time, at most two a
                    // second: a pass builds every open alarm's status, and the status message
                    // changes at most once a second anyway. The admin API builds its own.
                    tokio::time::sleep_until((tokio::time::Instant::now() + COALESCE).max(ticked + BURST_PASS)).await
                }
                Woke::Call(done) => {
                    in_flight.remove(&(done.alarm.clone(), done.index));
                    if let Err(e) = call_done(&services, done).await {
                        tracing::warn!(error = %e, "alarm worker: cannot record a webhook result");
                    }
                }
                Woke::Timer => {}
            }
        }
    });
}

/// One pass over the open alarms; returns when something is next due (ms since the epoch).
async fn tick(
    s: &Arc<Services>,
    done_tx: &mpsc::UnboundedSender<CallDone>,
    in_flight: &mut HashSet<(OwnedEventId, usize)>,
) -> Result<Option<u64>> {
    let mut next: Option<u64> = None;
    for record in s.alarms.records()? {
        let progress = s.alarms.progress(&record.event_id)?;
        if progress.closed.is_some() {
            continue;
        }
        let due = match advance(s, &record, progress, done_tx, in_flight).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(alarm = %record.id, error = %e, "alarm worker: step failed; retrying");
                Some(crate::users::now_ms() + RETRY.as_millis() as u64)
            }
        };
        if let Some(due) = due {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    Ok(next)
}

/// Takes whatever is due for one alarm; returns when it next needs the worker.
async fn advance(
    s: &Arc<Services>,
    record: &AlarmRecord,
    mut progress: Progress,
    done_tx: &mpsc::UnboundedSender<CallDone>,
    in_flight: &mut HashSet<(OwnedEventId, usize)>,
) -> Result<Option<u64>> {
    let now = crate::users::now_ms();
    let mut next: Option<u64> = None;
    let mut due_at = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
    let status = AlarmStatus::build(&s.alarms, record, now)?;

    if status.closed.is_none() {
        let remind_at = status.remind_at;
        match progress.reminded_at {
            None if now >= remind_at => {
                let detail = match settled(remind(s, record, &status.waiting).await)? {
                    Ok(()) => format!("reminder sent to {} who had not acknowledged", status.waiting.len()),
                    Err(refused) => format!("reminder refused: {refused}"),
                };
                progress.reminded_at = Some(now);
                progress.steps.push(Step { step: "reminder".into(), ts: now, detail });
                save(s, record, &progress).await?;
            }
            None => due_at(remind_at),
            Some(reminded) => {
                let escalate_at = reminded.saturating_add(record.escalate_after_s.saturating_mul(1000));
                if progress.escalated_at.is_none() {
                    if now >= escalate_at {
                        escalate(s, record, &status, &mut progress, now).await?;
                        save(s, record, &progress).await?;
                    } else {
                        due_at(escalate_at);
                    }
                }
            }
        }
        start_calls(s, record, &progress, now, done_tx, in_flight, &mut due_at);
    }

    // The status message, after the steps so it lists them.
    let status = AlarmStatus { steps: progress.steps.clone(), ..status };
    let text = status.text();
    if progress.status_text.as_deref() != Some(text.as_str()) {
        let edit_at = progress.status_edited_at.saturating_add(STATUS_EDIT_INTERVAL.as_millis() as u64);
        // The edit that closes the alarm ("all acknowledged") goes out at once.
        if progress.status_event_id.is_some() && now < edit_at && status.closed.is_none() {
            due_at(edit_at);
        } else {
            match settled(post_status(s, record, progress.status_event_id.as_deref(), &text).await)? {
                Ok(id) => progress.status_event_id = Some(id),
                // The room refuses it (the sender left, a policy changed): the alarm still
                // escalates; the next change of text tries again.
                Err(refused) => tracing::warn!(alarm = %record.id, error = %refused, "alarm status message refused"),
            }
            progress.status_text = Some(text);
            progress.status_edited_at = now;
            save(s, record, &progress).await?;
        }
    }
    // Closed once the status says so: the final edit is never lost to a throttle.
    if let Some(reason) = &status.closed
        && progress.status_text.as_deref() == Some(status.text().as_str())
    {
        progress.closed = Some(reason.clone());
        progress.pending_calls.clear();
        save(s, record, &progress).await?;
        tracing::info!(alarm = %record.id, %reason, "alarm closed");
        return Ok(None);
    }
    if let Some(expires) = record.expires {
        due_at(expires);
    }
    Ok(next)
}

async fn save(s: &Services, record: &AlarmRecord, progress: &Progress) -> Result<()> {
    let mut batch = tocsin_store::WriteBatch::new();
    batch.insert(trees::ALARM_PROGRESS, record.event_id.as_bytes().to_vec(), Db::to_json(progress)?);
    s.db.write(batch).await
}

fn reply_to(alarm: &ruma::EventId) -> Value {
    json!({ "m.in_reply_to": { "event_id": alarm } })
}

/// The status message: a notice replying to the alarm, then edits of it. Sent as the alarm's
/// sender: clients show an edit only from the original message's sender, and the sender is
/// certainly in the room.
async fn post_status(
    s: &Services,
    record: &AlarmRecord,
    existing: Option<&ruma::EventId>,
    text: &str,
) -> Result<OwnedEventId> {
    let (content, txn_ref) = match existing {
        None => (
            json!({ "msgtype": "m.notice", "body": text, "m.relates_to": reply_to(&record.event_id) }),
            Some(txn(format!("alarm-status-{}", record.event_id))),
        ),
        Some(status) => (
            json!({
                "msgtype": "m.notice",
                "body": format!("* {text}"),
                "m.new_content": { "msgtype": "m.notice", "body": text },
                "m.relates_to": { "rel_type": "m.replace", "event_id": status },
            }),
            None,
        ),
    };
    let event = NewEvent::message(TimelineEventType::RoomMessage, content);
    s.rooms.send(&record.room_id, &record.sender, event, txn_ref).await?;
    // The status message keeps its first id; an edit replaces its content.
    match existing {
        Some(id) => Ok(id.to_owned()),
        None => {
            let id = s.rooms.event_for_txn(
                &record.room_id,
                &record.sender,
                &txn(format!("alarm-status-{}", record.event_id)),
            )?;
            id.ok_or_else(|| Error::internal("status message sent but not found"))
        }
    }
}

/// Reminds exactly those who have not acknowledged (as `m.mentions`, so they are highlighted
/// and pushed), in as many messages as the mentions need.
async fn remind(s: &Services, record: &AlarmRecord, waiting: &[OwnedUserId]) -> Result<()> {
    for (n, chunk) in waiting.chunks(MENTIONS_PER_MESSAGE).enumerate() {
        let names: Vec<&str> = chunk.iter().map(|u| u.as_str()).collect();
        let body = format!(
            "⏰ Reminder: please acknowledge this {} alarm with a reaction or a reply: {}\n{}",
            record.level,
            record.body,
            names.join(", ")
        );
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.mentions": { "user_ids": names },
            "m.relates_to": reply_to(&record.event_id),
        });
        let event = NewEvent::message(TimelineEventType::RoomMessage, content);
        let id = txn(format!("alarm-reminder-{}-{n}", record.event_id));
        s.rooms.send(&record.room_id, &record.sender, event, Some(id)).await?;
    }
    Ok(())
}

/// Step 2: the escalation room, and the webhook calls queued.
async fn escalate(
    s: &Services,
    record: &AlarmRecord,
    status: &AlarmStatus,
    progress: &mut Progress,
    now: u64,
) -> Result<()> {
    let policy = s.policy.policy();
    let waiting: Vec<&str> = status.waiting.iter().map(|u| u.as_str()).collect();
    let acked = status.expected.len() - status.waiting.len();
    let posted = match escalation::target(s, record).await {
        Ok(target) => escalation::post(s, record, status, target).await,
        Err(e) => Err(e),
    };
    let detail = match settled(posted)? {
        Ok(detail) => detail,
        Err(refused) => format!("escalation room not reached: {refused}"),
    };
    progress.steps.push(Step { step: "escalation_room".into(), ts: now, detail });
    let hooks = policy.as_ref().map(|p| p.alarms.webhooks.clone()).unwrap_or_default();
    let body = json!({
        "alarm_id": record.id,
        "event_id": record.event_id,
        "room_id": record.room_id,
        "sender": record.sender,
        "level": record.level,
        "body": record.body,
        "ts": record.ts,
        "expected": status.expected.len(),
        "acknowledged": acked,
        "waiting": waiting,
        "escalated_at": now,
    })
    .to_string();
    for (index, hook) in hooks.iter().enumerate() {
        progress.pending_calls.push(PendingCall {
            url: hook.url.clone(),
            index,
            attempts: 0,
            next_at: now,
            body: body.clone(),
        });
    }
    progress.escalated_at = Some(now);
    Ok(())
}

/// Splits a step's error: a refusal (the room or the policy says no) is recorded as the step's
/// outcome, so escalation goes on; anything else (the store) is retried.
fn settled<T>(result: Result<T>) -> Result<std::result::Result<T, Error>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e @ (Error::Forbidden(_) | Error::NotFound(_) | Error::BadJson(_) | Error::TooLarge(_))) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Starts the webhook calls that are due and not running.
#[allow(clippy::too_many_arguments)]
fn start_calls(
    s: &Arc<Services>,
    record: &AlarmRecord,
    progress: &Progress,
    now: u64,
    done_tx: &mpsc::UnboundedSender<CallDone>,
    in_flight: &mut HashSet<(OwnedEventId, usize)>,
    due_at: &mut impl FnMut(u64),
) {
    let hooks = s.policy.policy().map(|p| p.alarms.webhooks.clone()).unwrap_or_default();
    for call in &progress.pending_calls {
        let key = (record.event_id.clone(), call.index);
        if in_flight.contains(&key) {
            continue;
        }
        if call.next_at > now {
            due_at(call.next_at);
            continue;
        }
        // The secret is the policy's now; a webhook removed from the policy is called no more.
        let Some(hook) = hooks.get(call.index).filter(|h| h.url == call.url).cloned() else {
            let done = CallDone {
                alarm: record.event_id.clone(),
                index: call.index,
                result: Err(Error::not_found("the webhook is no longer in the policy")),
            };
            let _ = done_tx.send(done);
            in_flight.insert(key);
            continue;
        };
        in_flight.insert(key);
        let (tx, alarm, index, body) = (done_tx.clone(), record.event_id.clone(), call.index, call.body.clone());
        let allow = s.config.outbound_ip_allow.clone();
        let delivery = format!("{}/{}", record.event_id, call.index);
        // A worker of its own, so shutdown waits for it (or stops it) like any other task.
        s.workers.spawn("alarm-webhook", |mut stop| async move {
            tokio::select! {
                result = webhook::call(allow, &hook.url, &hook.secret, &delivery, body) => {
                    let _ = tx.send(CallDone { alarm, index, result });
                }
                // Not recorded: the call is made again after the restart.
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// Records a webhook call's outcome: done, or retried later, or given up.
async fn call_done(s: &Services, done: CallDone) -> Result<()> {
    let Some(record) = s.alarms.find(done.alarm.as_str())? else { return Ok(()) };
    let mut progress = s.alarms.progress(&record.event_id)?;
    let now = crate::users::now_ms();
    let Some(pos) = progress.pending_calls.iter().position(|c| c.index == done.index) else { return Ok(()) };
    match done.result {
        Ok(code) => {
            let call = progress.pending_calls.remove(pos);
            let detail = format!("webhook {} answered {code}", call.url);
            progress.steps.push(Step { step: "webhook".into(), ts: now, detail });
        }
        Err(e) => {
            let call = &mut progress.pending_calls[pos];
            call.attempts += 1;
            if call.attempts >= webhook::MAX_ATTEMPTS || matches!(e, Error::NotFound(_)) {
                let call = progress.pending_calls.remove(pos);
                let detail = format!("webhook {} failed after {} attempts: {e}", call.url, call.attempts);
                progress.steps.push(Step { step: "webhook".into(), ts: now, detail });
            } else {
                call.next_at = now + webhook::backoff_ms(call.attempts);
                tracing::warn!(url = %call.url, attempts = call.attempts, error = %e, "alarm webhook failed; retrying");
            }
        }
    }
    save(s, &record, &progress).await?;
    s.alarms.wake_handle().notify_one();
    Ok(())
}
