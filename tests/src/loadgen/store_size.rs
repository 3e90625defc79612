//! A big store: `rooms` rooms filled with messages up to each checkpoint (10 million events
//! by default), and at each checkpoint the store's bytes on disk, the start-up time of the
//! node binary on it, its RSS after start and after a user's first `/sync`, and that sync's time.
//!
//! The messages go in through the node's own commit path (`Rooms::send`: built, signed,
//! authorised and committed like a client's), in this process, without HTTP; the
//! measurements run the real binary on the filled store, in its own process.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tocsin_node::{
    NodeHandle,
    ruma::{OwnedRoomId, OwnedUserId, events::TimelineEventType},
};
use tokio::task::JoinSet;

use super::read_rss;
use crate::{
    cluster::Cluster,
    cs_client::{Direction, Homeserver},
};

/// Rooms each user creates (and so is joined to): the syncing user's room count.
const ROOMS_PER_USER: u32 = 100;
/// Users who write the messages, each a member of every `WRITERS`th room: the rooms' owners
/// read them, so a sync counts unread messages as it would for staff.
const WRITERS: u32 = 10;
/// Tasks sending at once, each to its own share of the rooms.
const FILL_TASKS: usize = 32;
/// createRoom calls at once.
const CREATE_CONCURRENCY: usize = 8;
const PASSWORD: &str = "store-bench-password-0";
/// A message of a typical length (the body of a field report).
const BODY: &str = "Pumping station 4: water level 1.2 m above normal, two pumps running, power on \
                    generator since 03:10. Next report in 30 min.";

#[derive(Debug, Clone)]
pub struct StoreSizeConfig {
    pub dir: PathBuf,
    /// The node binary measured at each checkpoint (`tocsin-node`).
    pub node_binary: PathBuf,
    pub rooms: u32,
    /// Messages in the store at each checkpoint, ascending.
    pub checkpoints: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Messages sent so far (the rooms' own creation events come on top).
    pub messages: u64,
    /// Every event in the store: messages and the rooms' creation events.
    pub events: u64,
    pub bytes_on_disk: u64,
    pub bytes_per_event: f64,
    /// Messages per second while filling up to this checkpoint.
    pub fill_rate: f64,
    /// From starting the binary until `/_matrix/client/versions` answers.
    pub startup_ms: f64,
    pub rss_after_start_mib: f64,
    /// A user in `ROOMS_PER_USER` rooms, all written by others: first `/sync` (timeline limit 10
    /// per room, unread counts over what the user has not read).
    pub initial_sync_ms: f64,
    pub initial_sync_bytes: u64,
    pub rss_after_sync_mib: f64,
    /// [`SETTLE`] after the sync, idle: once the work a start sets off (retention purge, the
    /// announcement to peers, the notification trim) has run.
    /// `None` in reports from before it was measured.
    #[serde(default)]
    pub rss_settled_mib: Option<f64>,
}

/// How long the node idles after the sync before its RSS is read again.
pub const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreSizeReport {
    pub rooms: u32,
    pub users: u32,
    pub setup_events: u64,
    pub setup_s: f64,
    pub checkpoints: Vec<Checkpoint>,
}

struct Filled {
    cluster: Cluster,
    rooms: Vec<(OwnedRoomId, OwnedUserId)>,
    users: u32,
    setup_events: u64,
}

pub async fn run(cfg: &StoreSizeConfig) -> Result<StoreSizeReport> {
    if cfg.checkpoints.is_empty() || !cfg.checkpoints.is_sorted() {
        bail!("checkpoints must be given in ascending order");
    }
    let started = Instant::now();
    let filled = setup(cfg).await?;
    let setup_s = started.elapsed().as_secs_f64();
    eprintln!(
        "store: {} rooms of {} users made ({} events) in {setup_s:.1} s",
        cfg.rooms, filled.users, filled.setup_events
    );
    let mut checkpoints = Vec::new();
    let mut sent = 0u64;
    for &target in &cfg.checkpoints {
        let node = filled.cluster.start(0).await?;
        let fill_start = Instant::now();
        fill(&node, &filled.rooms, sent, target).await?;
        let fill_rate = (target - sent) as f64 / fill_start.elapsed().as_secs_f64().max(1e-9);
        sent = target;
        node.shutdown().await;
        let checkpoint = measure(cfg, &filled, sent, fill_rate).await?;
        eprintln!(
            "store: {} messages, {:.0} bytes/event, start-up {:.0} ms, RSS {:.1} MiB after start, {:.1} MiB after a \
             sync of {:.0} ms, {:.1} MiB {} s later (filled at {:.0} messages/s)",
            checkpoint.messages,
            checkpoint.bytes_per_event,
            checkpoint.startup_ms,
            checkpoint.rss_after_start_mib,
            checkpoint.rss_after_sync_mib,
            checkpoint.initial_sync_ms,
            checkpoint.rss_settled_mib.unwrap_or_default(),
            SETTLE.as_secs(),
            checkpoint.fill_rate
        );
        checkpoints.push(checkpoint);
    }
    Ok(StoreSizeReport {
        rooms: cfg.rooms,
        users: filled.users,
        setup_events: filled.setup_events,
        setup_s,
        checkpoints,
    })
}

/// One node, its users, and the rooms (each with its writer, who sends into it).
async fn setup(cfg: &StoreSizeConfig) -> Result<Filled> {
    let mut cluster = Cluster::plan(&cfg.dir, &["store.test"])?;
    cluster.members[0].config.rate_limits.enabled = false;
    cluster.write_config(0)?;
    let node = cluster.start(0).await?;
    let owners = cfg.rooms.div_ceil(ROOMS_PER_USER);
    let hs = Homeserver::new(&node.base_url())?;
    let mut sessions = Vec::new();
    let mut writers = Vec::new();
    for u in 0..owners {
        node.services.users.create_account(&format!("u{u}"), Some(PASSWORD), None, false).await?;
        sessions.push(hs.login(&format!("u{u}"), PASSWORD).await?);
    }
    for w in 0..WRITERS {
        node.services.users.create_account(&format!("w{w}"), Some(PASSWORD), None, false).await?;
        writers.push(hs.login(&format!("w{w}"), PASSWORD).await?);
    }
    let rooms: Vec<(OwnedRoomId, OwnedUserId)> = stream::iter(0..cfg.rooms)
        .map(|r| {
            let owner = &sessions[(r / ROOMS_PER_USER) as usize];
            let writer = &writers[(r % WRITERS) as usize];
            async move {
                let body = json!({"preset": "private_chat", "name": "Store bench", "invite": [writer.user_id]});
                let room = owner.create_room(&body).await?;
                writer.join(&room).await?;
                Ok::<_, anyhow::Error>((OwnedRoomId::try_from(room)?, OwnedUserId::try_from(writer.user_id.as_str())?))
            }
        })
        .buffered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    // Every room was made the same way: its creation events, counted in the first (u0's).
    let first = &rooms.first().context("no rooms")?.0;
    let made = sessions[0].messages(first.as_str(), None, Direction::Backward, 100, None).await?;
    let setup_events = made.chunk.len() as u64 * u64::from(cfg.rooms);
    node.shutdown().await;
    Ok(Filled { cluster, rooms, users: owners + WRITERS, setup_events })
}

/// Sends messages `from..to` (numbered across the run), round-robin over the rooms.
async fn fill(node: &NodeHandle, rooms: &[(OwnedRoomId, OwnedUserId)], from: u64, to: u64) -> Result<()> {
    let next = Arc::new(AtomicU64::new(from));
    let rooms: Arc<Vec<_>> = Arc::new(rooms.to_vec());
    let mut tasks = JoinSet::new();
    for _ in 0..FILL_TASKS {
        let (services, next, rooms) = (node.services.clone(), next.clone(), rooms.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let (room, sender) = &rooms[(n % rooms.len() as u64) as usize];
                let content = json!({"msgtype": "m.text", "body": format!("{BODY} #{n}")});
                let event = tocsin_node::rooms::NewEvent::message(TimelineEventType::RoomMessage, content);
                services.rooms.send(room, sender, event, None).await.with_context(|| format!("message {n}"))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Starts the binary on the store, times its start and a sync, reads its RSS, and stops it.
async fn measure(cfg: &StoreSizeConfig, filled: &Filled, messages: u64, fill_rate: f64) -> Result<Checkpoint> {
    let member = &filled.cluster.members[0];
    let bytes_on_disk = dir_bytes(&member.data_dir)?;
    let events = messages + filled.setup_events;
    let log = std::fs::File::create(member.data_dir.join("measure.log"))?;
    let started = Instant::now();
    let child = Command::new(&cfg.node_binary)
        .arg("--config")
        .arg(&member.config_file)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", cfg.node_binary.display()))?;
    let mut child = Running(Some(child));
    let hs = Homeserver::new(&member.base_url())?;
    let deadline = started + Duration::from_secs(120);
    while hs.versions().await.is_err() {
        if Instant::now() > deadline {
            bail!("the node did not answer within 120 s; see {}", member.data_dir.join("measure.log").display());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let pid = child.pid()?;
    let rss_after_start_mib = read_rss(pid)?.vm_rss_kb as f64 / 1024.0;
    let session = hs.login("u0", PASSWORD).await?;
    let filter = r#"{"room":{"timeline":{"limit":10}},"presence":{"not_types":["*"]}}"#;
    let sync_start = Instant::now();
    let sync = session.initial_sync_json(filter).await?;
    let initial_sync_ms = sync_start.elapsed().as_secs_f64() * 1e3;
    let rss_after_sync_mib = read_rss(pid)?.vm_rss_kb as f64 / 1024.0;
    tokio::time::sleep(SETTLE).await;
    let rss_settled_mib = Some(read_rss(pid)?.vm_rss_kb as f64 / 1024.0);
    child.stop()?;
    Ok(Checkpoint {
        messages,
        events,
        bytes_on_disk,
        bytes_per_event: bytes_on_disk as f64 / events as f64,
        fill_rate,
        startup_ms,
        rss_after_start_mib,
        initial_sync_ms,
        initial_sync_bytes: serde_json::to_vec(&sync)?.len() as u64,
        rss_after_sync_mib,
        rss_settled_mib,
    })
}

/// The node process; stopped with SIGTERM (a clean shutdown, so the next fill opens the store
/// without a repair), killed if dropped early.
struct Running(Option<Child>);

impl Running {
    fn pid(&self) -> Result<u32> {
        self.0.as_ref().map(Child::id).context("the node has stopped")
    }

    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.0.take() else { return Ok(()) };
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        child.wait()?;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The blocks the files under `dir` occupy, as `du` counts them: redb grows its file ahead of
/// need, so a file's length overstates what the store holds (by 40 % at a million messages).
fn dir_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}

/// The checkpoints as a markdown table.
pub fn table(report: &StoreSizeReport) -> String {
    let mut out = format!(
        "{} rooms, {} users (owners of {} rooms each, and writers), {} creation events\n\n\
         | messages | events | bytes on disk | bytes/event | start-up (ms) | RSS after start (MiB) | first /sync (ms) \
         | /sync bytes | RSS after /sync (MiB) | RSS {} s later (MiB) | fill (messages/s) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.rooms,
        report.users,
        ROOMS_PER_USER,
        report.setup_events,
        SETTLE.as_secs()
    );
    for c in &report.checkpoints {
        out += &format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {:.1} | {} | {:.0} |\n",
            c.messages,
            c.events,
            c.bytes_on_disk,
            c.bytes_per_event,
            c.startup_ms,
            c.rss_after_start_mib,
            c.initial_sync_ms,
            c.initial_sync_bytes,
            c.rss_after_sync_mib,
            c.rss_settled_mib.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}")),
            c.fill_rate
        );
    }
    out
}

/// One chart's lines: a name and a figure of each checkpoint.
/// `None` leaves a checkpoint out of the line.
type Lines = [(&'static str, fn(&Checkpoint) -> Option<f64>)];

/// Writes `<stem>-time.svg` (start-up and first /sync) and `<stem>-rss.svg` into `dir`, each
/// against the messages in the store (log scale); returns their paths.
pub fn charts(report: &StoreSizeReport, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let time: &Lines = &[("start-up", |c| Some(c.startup_ms)), ("first /sync", |c| Some(c.initial_sync_ms))];
    let rss: &Lines = &[
        ("after start", |c| Some(c.rss_after_start_mib)),
        ("after the /sync", |c| Some(c.rss_after_sync_mib)),
        ("10 s later", |c| c.rss_settled_mib),
    ];
    let mut written = Vec::new();
    for (name, title, unit, lines) in [
        ("time", "Start-up and a first /sync against store size", "ms", time),
        ("rss", "RSS against store size", "MiB", rss),
    ] {
        let path = dir.join(format!("{stem}-{name}.svg"));
        draw(report, title, unit, lines, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(report: &StoreSizeReport, title: &str, unit: &str, lines: &Lines, path: &Path) -> Result<()> {
    let series: Vec<(&str, Vec<(u64, f64)>)> = lines
        .iter()
        .map(|(label, value)| {
            (*label, report.checkpoints.iter().filter_map(|c| Some((c.messages, value(c)?))).collect())
        })
        .filter(|(_, points): &(&str, Vec<_>)| !points.is_empty())
        .collect();
    super::chart::lines(path, title, "messages in the store", unit, 1_000, &series)
}
