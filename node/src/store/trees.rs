//! Tree names, with the shape of their keys and values.

/// Node-wide values: the stream reservation, the signing key id.
pub const META: &str = "meta";

// Accounts.
/// user_id -> Account (JSON)
pub const USERS: &str = "users";
/// user_id SEP device_id -> Device (JSON)
pub const DEVICES: &str = "devices";
/// access_token -> TokenInfo (JSON)
pub const TOKENS: &str = "tokens";
/// refresh_token -> RefreshInfo (JSON): the device it refreshes (see `users::tokens`)
pub const REFRESH_TOKENS: &str = "refresh_tokens";
/// OpenID token -> {user_id, expires_at_ms} (JSON)
pub const OPENID_TOKENS: &str = "openid_tokens";
/// user_id SEP filter_id -> filter JSON
pub const FILTERS: &str = "filters";

// Rooms.
/// event_id -> StoredEvent (JSON)
pub const EVENTS: &str = "events";
/// room_id SEP pos -> event_id
pub const TIMELINE: &str = "timeline";
/// room_id -> RoomMeta (JSON)
pub const ROOMS: &str = "rooms";
/// room_id SEP event_type SEP state_key -> event_id
pub const ROOM_STATE: &str = "room_state";
/// room_id SEP pos -> event_id, for state events only (state changes in a range)
pub const STATE_CHANGES: &str = "state_changes";
/// user_id SEP room_id -> UserRoom (JSON): the user's membership and when it changed
pub const USER_ROOMS: &str = "user_rooms";
/// user_id SEP pos -> room_id: membership changes, for the invite and leave sections of sync
pub const MEMBERSHIP_CHANGES: &str = "membership_changes";
/// user_id SEP device_id SEP txn_id -> event_id
pub const TXNS: &str = "txns";
/// room alias -> room_id
pub const ALIASES: &str = "aliases";
/// room alias -> user_id of who created it through the alias API (see `directory`)
pub const ALIAS_CREATORS: &str = "alias_creators";
/// room_id -> "" for rooms in the public directory
pub const PUBLIC_ROOMS: &str = "public_rooms";
/// room_id SEP relates_to_event_id SEP pos -> event_id
pub const RELATIONS: &str = "relations";
/// room_id SEP thread root event_id SEP pos -> reply event_id: `m.thread` replies (see
/// `rooms::threads`)
pub const THREADS: &str = "threads";
/// redacted event id -> redaction event id
pub const REDACTIONS: &str = "redactions";
/// snapshot id (16 bytes) -> sorted [(type, state_key, event_id)] (JSON): a room state stored
/// whole (see `rooms::snapshots`)
pub const STATE_SNAPSHOTS: &str = "state_snapshots";
/// snapshot id (16 bytes) -> Delta (JSON): a room state as its differences from a base snapshot
pub const STATE_DELTAS: &str = "state_deltas";
/// event_id -> snapshot id of the state before the event
pub const EVENT_STATE: &str = "event_state";
/// user_id SEP room_id -> stripped state (JSON) of an invite to a room this node is not in
pub const INVITE_STATE: &str = "invite_state";
/// room_id SEP server_name SEP user_id SEP pos -> membership: every membership change, for
/// history visibility (what a user, or a server's users, could read at each position)
pub const MEMBER_HISTORY: &str = "member_history";
/// room_id SEP pos -> history_visibility value: every change of the room's history visibility
pub const VISIBILITY_HISTORY: &str = "visibility_history";
/// event_id -> room_id: message events whose body the retention purge deleted (their EVENTS
/// entry is only the redacted skeleton the DAG needs, never served)
pub const PURGED: &str = "purged";

/// pos SEP op ('+' index, '-' drop) -> event_id: what the search index has yet to take in
/// (see `search`)
pub const SEARCH_QUEUE: &str = "search_queue";

// Per-user data streams.
/// user_id SEP room_id-or-empty SEP type -> content JSON
pub const ACCOUNT_DATA: &str = "account_data";
/// user_id SEP pos -> room_id-or-empty SEP type
pub const ACCOUNT_DATA_CHANGES: &str = "account_data_changes";
/// room_id SEP receipt_type SEP user_id -> Receipt (JSON)
pub const RECEIPTS: &str = "receipts";
/// room_id SEP pos -> receipt key (in RECEIPTS)
pub const RECEIPT_CHANGES: &str = "receipt_changes";

// End-to-end encryption.
/// user_id SEP device_id -> device keys JSON
pub const DEVICE_KEYS: &str = "device_keys";
/// user_id SEP device_id SEP algorithm:key_id -> one-time key JSON
pub const ONE_TIME_KEYS: &str = "one_time_keys";
/// user_id SEP device_id SEP algorithm -> fallback key JSON + used flag
pub const FALLBACK_KEYS: &str = "fallback_keys";
/// user_id SEP master|self_signing|user_signing -> cross-signing key JSON
pub const CROSS_SIGNING_KEYS: &str = "cross_signing_keys";
/// pos -> user_id whose device list or cross-signing keys changed
pub const KEY_CHANGES: &str = "key_changes";
/// user_id -> last key change pos
pub const USER_KEY_CHANGE: &str = "user_key_change";
/// user_id SEP device_id SEP pos -> to-device event JSON
pub const TO_DEVICE: &str = "to_device";
/// user_id SEP version -> backup version JSON
pub const BACKUP_VERSIONS: &str = "backup_versions";
/// user_id SEP version SEP room_id SEP session_id -> key backup data JSON
pub const BACKUP_KEYS: &str = "backup_keys";

// Media.
/// media_id -> MediaMeta (JSON); the bytes live on disk, named by their sha256
pub const MEDIA: &str = "media";

// Operations (admin API).
/// registration token -> RegistrationToken (JSON): tokens made with the admin API
pub const REGISTRATION_TOKENS: &str = "registration_tokens";
/// room_id -> ShutDown (JSON): rooms an admin shut down; local users may only leave them
pub const SHUT_DOWN_ROOMS: &str = "shut_down_rooms";

// Outbound federation.
/// destination_server_name SEP seq (8 bytes big-endian) -> QueueItem (JSON, tagged by "kind"):
/// what is still to be sent to that server, in seq order (see `federation::sender`)
pub const FED_QUEUE: &str = "fed_queue";

// Push.
/// user_id SEP app_id SEP pushkey -> StoredPusher (JSON)
pub const PUSHERS: &str = "pushers";
/// app_id SEP pushkey SEP user_id -> "": who holds a pushkey (unique across users unless appended)
pub const PUSHKEYS: &str = "pushkeys";
/// pos -> room_id SEP event_id: live events the push worker has not evaluated yet; or
/// pos -> "read" SEP user_id: a local user's read receipt, for a badge-only push
pub const PUSH_EVENTS: &str = "push_events";
/// user_id SEP app_id SEP pushkey SEP pos -> QueuedPush (JSON): each pusher's notifications, in
/// event order (see `push::queue`)
pub const PUSH_QUEUE: &str = "push_queue";
/// user_id SEP pos -> Notified (JSON): what notified the user, for `GET /notifications` (see
/// `push::notifications`)
pub const NOTIFICATIONS: &str = "notifications";
/// user_id SEP room_id SEP pos -> [highlight]: the same entries by room, so `/sync` counts a
/// room's unread notifications with one short key scan (see `push::notifications`)
pub const UNREAD: &str = "unread";

// Federation.
/// server_name -> {valid_until, object}: another server's signed key object (JSON), fetched
/// from its key server, and until when it is trusted
pub const SERVER_KEYS: &str = "server_keys";

// Alarms (see `alarms`).
/// alarm event_id -> AlarmRecord (JSON), written when a local user's alarm enters the timeline
pub const ALARMS: &str = "alarms";
/// alarm block id -> alarm event_id
pub const ALARM_IDS: &str = "alarm_ids";
/// room_id SEP pos -> alarm event_id: the alarms of a room, for read receipts
pub const ALARM_ROOMS: &str = "alarm_rooms";
/// alarm event_id SEP user_id -> Mark (JSON): the user's first acknowledgement
pub const ALARM_ACKS: &str = "alarm_acks";
/// alarm event_id SEP user_id -> Mark (JSON): the user's first read receipt at or after it
pub const ALARM_READS: &str = "alarm_reads";
/// alarm event_id -> Ended (JSON): cancelled by an edit or redacted
pub const ALARM_ENDS: &str = "alarm_ends";
/// alarm event_id -> Progress (JSON): status message and escalation steps (the worker's)
pub const ALARM_PROGRESS: &str = "alarm_progress";

// Reports (see `rooms::reports`).
/// received_ms (8 bytes, big-endian) SEP subject ids (room_id SEP event_id, room_id, or user_id)
/// SEP reporter -> Report (JSON)
pub const REPORTS: &str = "reports";
