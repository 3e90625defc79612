//! Sliding sync connections: what each connection (user, device, `conn_id`) was last sent, by
//! position. A position is `{generation}_{n}`: the generation is drawn afresh whenever a
//! connection starts, so a position from an earlier connection or an earlier run of the node is
//! refused with `M_UNKNOWN_POS` and the client starts over. State is bounded: a few positions per
//! connection, a few connections per device, and a connection unused for a while is dropped.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, events::StateEventType};

use crate::{error::Error, error::Result, sync::Token};

/// Positions kept per connection: the newest, and the one before it for a client that retries
/// a request whose answer it lost.
const POSITIONS_KEPT: usize = 2;
/// Connections per user and device (Element X uses two: the room list and encryption).
const CONNECTIONS_PER_DEVICE: usize = 8;
/// A connection nobody used for this long is dropped; its client gets `M_UNKNOWN_POS`.
const IDLE_EXPIRY: Duration = Duration::from_secs(30 * 60);

/// How a room is to be sent: the union of the lists and subscriptions that include it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomConfig {
    pub required_state: Vec<(StateEventType, String)>,
    pub timeline_limit: usize,
}

impl RoomConfig {
    pub fn merge(&mut self, required_state: &[(StateEventType, String)], timeline_limit: usize) {
        for entry in required_state {
            if !self.required_state.contains(entry) {
                self.required_state.push(entry.clone());
            }
        }
        self.timeline_limit = self.timeline_limit.max(timeline_limit);
    }
}

/// What the connection was sent of one room.
#[derive(Debug, Clone)]
pub struct SentRoom {
    pub membership: String,
    /// Everything up to this stream position has been sent.
    pub upto: u64,
    pub config: Arc<RoomConfig>,
    pub counts: (u64, u64),
}

/// A connection's state as of one position.
#[derive(Debug, Clone, Default)]
pub struct PosState {
    /// The streams as of this position; `None` before the first response.
    pub token: Option<Token>,
    pub rooms: HashMap<OwnedRoomId, SentRoom>,
    pub list_counts: BTreeMap<String, usize>,
    /// The user's rooms in list order, one per connection (every position of it shares it; see
    /// `index::RoomIndex`).
    pub index: Arc<tokio::sync::Mutex<super::index::RoomIndex>>,
}

struct Connection {
    generation: u64,
    next: u64,
    positions: VecDeque<(u64, Arc<PosState>)>,
    last_used: Instant,
}

type Key = (OwnedUserId, OwnedDeviceId, String);

#[derive(Default)]
pub struct Connections {
    inner: Mutex<HashMap<Key, Connection>>,
}

impl Connections {
    /// The state a request continues from: an empty one (and the connection restarted) without
    /// `pos`, else the state recorded at `pos`.
    pub fn resume(
        &self,
        user: &OwnedUserId,
        device: &OwnedDeviceId,
        conn_id: &str,
        pos: Option<&str>,
    ) -> Result<Arc<PosState>> {
        let mut map = self.inner.lock().map_err(Error::internal)?;
        let now = Instant::now();
        map.retain(|_, c| now.duration_since(c.last_used) < IDLE_EXPIRY);
        let key = (user.clone(), device.clone(), conn_id.to_owned());
        let Some(pos) = pos else {
            if !map.contains_key(&key) {
                let same_device: Vec<Key> = map.keys().filter(|(u, d, _)| u == user && d == device).cloned().collect();
                if same_device.len() >= CONNECTIONS_PER_DEVICE
                    && let Some(oldest) = same_device.iter().min_by_key(|k| map.get(*k).map(|c| c.last_used))
                {
                    map.remove(oldest);
                }
            }
            map.insert(
                key,
                Connection { generation: rand::random(), next: 0, positions: VecDeque::new(), last_used: now },
            );
            return Ok(Arc::default());
        };
        let connection = map.get_mut(&key).ok_or(Error::UnknownPos)?;
        let (generation, n) = parse_pos(pos).ok_or(Error::UnknownPos)?;
        if generation != connection.generation {
            return Err(Error::UnknownPos);
        }
        connection.last_used = now;
        connection.positions.iter().find(|(p, _)| *p == n).map(|(_, s)| s.clone()).ok_or(Error::UnknownPos)
    }

    /// Records the state sent in a response and returns its position. A connection restarted
    /// meanwhile (a request without `pos` on the same `conn_id`) makes this answer stale.
    pub fn record(&self, user: &OwnedUserId, device: &OwnedDeviceId, conn_id: &str, state: PosState) -> Result<String> {
        let mut map = self.inner.lock().map_err(Error::internal)?;
        let key = (user.clone(), device.clone(), conn_id.to_owned());
        let connection = map.get_mut(&key).ok_or(Error::UnknownPos)?;
        connection.next += 1;
        let n = connection.next;
        connection.positions.push_back((n, Arc::new(state)));
        while connection.positions.len() > POSITIONS_KEPT {
            connection.positions.pop_front();
        }
        connection.last_used = Instant::now();
        Ok(format!("{}_{n}", connection.generation))
    }
}

fn parse_pos(pos: &str) -> Option<(u64, u64)> {
    let (generation, n) = pos.split_once('_')?;
    Some((generation.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_per_connection_and_bounded() {
        let conns = Connections::default();
        let user: OwnedUserId = "@a:x".try_into().expect("user id");
        let device: OwnedDeviceId = "D".into();
        assert!(matches!(conns.resume(&user, &device, "c", Some("1_1")), Err(Error::UnknownPos)));
        conns.resume(&user, &device, "c", None).expect("new connection");
        let first = conns.record(&user, &device, "c", PosState::default()).expect("recorded");
        let second = conns.record(&user, &device, "c", PosState::default()).expect("recorded");
        conns.resume(&user, &device, "c", Some(&first)).expect("previous position kept");
        let third = conns.record(&user, &device, "c", PosState::default()).expect("recorded");
        assert!(matches!(conns.resume(&user, &device, "c", Some(&first)), Err(Error::UnknownPos)));
        conns.resume(&user, &device, "c", Some(&third)).expect("newest position");
        conns.resume(&user, &device, "c", Some(&second)).expect("one before");
        // Another connection's positions mean nothing here.
        assert!(matches!(conns.resume(&user, &device, "other", Some(&third)), Err(Error::UnknownPos)));
        // A restart forgets every earlier position.
        conns.resume(&user, &device, "c", None).expect("restarted");
        assert!(matches!(conns.resume(&user, &device, "c", Some(&third)), Err(Error::UnknownPos)));
    }
}
