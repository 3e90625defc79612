//! Server-side search (`POST /search`): a full-text index of the text of unencrypted room
//! events, kept with tantivy in the data directory's `search/` folder.
//!
//! What is indexed: `content.body` of messages, `content.name` of room names and
//! `content.topic` of topics. Encrypted rooms' events carry no text the server can read, so
//! they are never indexed. The index follows the store: `timeline_rows` (the one place every
//! event is committed) queues each indexable event and each redaction in `SEARCH_QUEUE` in the
//! event's own batch, and the `search-index` worker ([`worker`]) takes the queue into the index.
//! The retention purge queues the removal of each event whose body it deletes. A result is
//! served only through the room's read rules and the retention rules, so an event that was
//! redacted, purged or is hidden by history visibility is never shown, even before the worker
//! has removed it.

pub mod worker;

use std::{path::Path, sync::Mutex};

use ruma::{EventId, OwnedEventId, OwnedRoomId, events::TimelineEventType};
use tantivy::{
    Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term,
    collector::{Count, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, Occur, Query, QueryParser, TermQuery},
    schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value},
};
use tocsin_store::WriteBatch;

use crate::{
    error::{Error, Result},
    rooms::Pdu,
    store::{pos_bytes, trees},
};

/// The writer's memory budget: tantivy's smallest, since events come a few at a time.
const WRITER_MEMORY: usize = 15_000_000;

/// The keys the spec lets a search name, and the event fields they read.
pub const KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

/// The text an event adds to the index: `(key, text)`.
pub fn indexable(pdu: &Pdu) -> Option<(&'static str, String)> {
    let (key, field) = match pdu.kind {
        TimelineEventType::RoomMessage => ("content.body", "body"),
        TimelineEventType::RoomName => ("content.name", "name"),
        TimelineEventType::RoomTopic => ("content.topic", "topic"),
        _ => return None,
    };
    let text = pdu.content_field(field)?.as_str()?.trim().to_owned();
    (!text.is_empty()).then_some((key, text))
}

/// A queue row of [`trees::SEARCH_QUEUE`]: index this event, drop the one it redacts, or drop
/// this one (the retention purge deleted its body).
const ADD: u8 = b'+';
const DROP: u8 = b'-';
const PURGE: u8 = b'p';

/// Queues what `pdu` changes in the index, in the batch that commits it.
pub fn queue_rows(pdu: &Pdu, pos: u64, redacts: Option<&EventId>, batch: &mut WriteBatch) {
    if indexable(pdu).is_some() {
        batch.insert(trees::SEARCH_QUEUE, row_key(pos, ADD), pdu.event_id.as_bytes().to_vec());
    }
    if let Some(target) = redacts {
        batch.insert(trees::SEARCH_QUEUE, row_key(pos, DROP), target.as_bytes().to_vec());
    }
}

/// Queues the removal of a purged event's text, at the event's own position.
pub fn queue_purge(event_id: &EventId, pos: u64, batch: &mut WriteBatch) {
    batch.insert(trees::SEARCH_QUEUE, row_key(pos, PURGE), event_id.as_bytes().to_vec());
}

/// Rows sort by position; an event's own row and the one it drops never share a key.
fn row_key(pos: u64, op: u8) -> Vec<u8> {
    let mut key = pos_bytes(pos).to_vec();
    key.push(op);
    key
}

/// The schema's fields.
#[derive(Clone, Copy)]
struct Fields {
    event_id: Field,
    room_id: Field,
    key: Field,
    text: Field,
    /// The event's stream position: the order of `order_by: recent`.
    pos: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        event_id: builder.add_text_field("event_id", STRING | STORED),
        room_id: builder.add_text_field("room_id", STRING),
        key: builder.add_text_field("key", STRING),
        text: builder.add_text_field("text", TEXT),
        pos: builder.add_u64_field("pos", INDEXED | FAST),
    };
    (builder.build(), fields)
}

/// The index, its reader and its one writer.
pub struct Search {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// Whether the index folder was new at open: the worker then indexes what the store
    /// already holds (a store from before search existed, or restored without its index).
    fresh: bool,
}

/// What one search asks.
pub struct SearchQuery<'a> {
    pub term: &'a str,
    pub rooms: &'a [OwnedRoomId],
    pub keys: &'a [&'static str],
    pub recent_first: bool,
    pub offset: usize,
    pub limit: usize,
}

/// One hit: the event and its score.
pub struct Hit {
    pub event_id: OwnedEventId,
    pub score: f32,
}

impl Search {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let fresh = !dir.join("meta.json").exists();
        std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(index_error)?;
        let index = Index::open_or_create(directory, schema).map_err(index_error)?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(index_error)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
        Ok(Self { index, reader, writer: Mutex::new(writer), fields, fresh })
    }

    pub fn was_fresh(&self) -> bool {
        self.fresh
    }

    /// Adds `pdu`'s text (replacing what the index held for it), if it has any.
    fn add(&self, writer: &IndexWriter, pdu: &Pdu, pos: u64) -> Result<()> {
        self.drop_event(writer, &pdu.event_id);
        let Some((key, text)) = indexable(pdu) else { return Ok(()) };
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.event_id, pdu.event_id.as_str());
        doc.add_text(self.fields.room_id, pdu.room_id.as_str());
        doc.add_text(self.fields.key, key);
        doc.add_text(self.fields.text, &text);
        doc.add_u64(self.fields.pos, pos);
        writer.add_document(doc).map_err(index_error)?;
        Ok(())
    }

    fn drop_event(&self, writer: &IndexWriter, event_id: &EventId) {
        writer.delete_term(Term::from_field_text(self.fields.event_id, event_id.as_str()));
    }

    /// Applies `changes` and commits them: only then may their queue rows go.
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        let mut writer = self.writer.lock().map_err(|_| Error::internal("search writer poisoned"))?;
        for change in changes {
            match change {
                Change::Add(pdu, pos) => self.add(&writer, pdu, *pos)?,
                Change::Drop(event_id) => self.drop_event(&writer, event_id),
            }
        }
        writer.commit().map_err(index_error)?;
        drop(writer);
        self.reader.reload().map_err(index_error)
    }

    /// The hits of `query`, best (or newest) first, and how many there are in all.
    pub fn query(&self, query: &SearchQuery<'_>) -> Result<(Vec<Hit>, usize)> {
        if query.rooms.is_empty() || query.keys.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        // Every word must match, as in Synapse's and Conduit's search.
        parser.set_conjunction_by_default();
        // Lenient: a stray quote or colon in what someone typed is text, not a syntax error.
        let (text_query, _) = parser.parse_query_lenient(query.term);
        let any_of = |field: Field, values: &mut dyn Iterator<Item = &str>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                values
                    .map(|v| {
                        let term = TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic);
                        (Occur::Should, Box::new(term) as Box<dyn Query>)
                    })
                    .collect(),
            ))
        };
        let rooms = any_of(self.fields.room_id, &mut query.rooms.iter().map(|r| r.as_str()));
        let keys = any_of(self.fields.key, &mut query.keys.iter().copied());
        let all = BooleanQuery::new(vec![(Occur::Must, text_query), (Occur::Must, rooms), (Occur::Must, keys)]);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(query.limit.max(1)).and_offset(query.offset);
        // One pass over the matches collects the page and the count.
        let (scored, count): (Vec<(f32, tantivy::DocAddress)>, usize) = if query.recent_first {
            let newest = top.order_by_fast_field::<u64>("pos", tantivy::Order::Desc);
            let (docs, count) = searcher.search(&all, &(newest, Count)).map_err(index_error)?;
            (docs.into_iter().map(|(_, address)| (0.0, address)).collect(), count)
        } else {
            searcher.search(&all, &(top, Count)).map_err(index_error)?
        };
        let mut hits = Vec::with_capacity(scored.len());
        for (score, address) in scored {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
            let Some(id) = doc.get_first(self.fields.event_id).and_then(|v| v.as_str()) else { continue };
            let event_id = EventId::parse(id).map_err(Error::internal)?;
            hits.push(Hit { event_id, score });
        }
        Ok((hits, count))
    }

    /// The words of `term` as the index sees them (lower case, split on punctuation): what
    /// clients highlight in the results.
    pub fn highlights(&self, term: &str) -> Vec<String> {
        let Ok(mut analyzer) = self.index.tokenizer_for_field(self.fields.text) else { return Vec::new() };
        let mut stream = analyzer.token_stream(term);
        let mut words = Vec::new();
        while stream.advance() {
            let word = stream.token().text.clone();
            if !words.contains(&word) {
                words.push(word);
            }
        }
        words
    }
}

/// A change the worker makes to the index.
pub enum Change {
    Add(Box<Pdu>, u64),
    Drop(OwnedEventId),
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("search index: {e}"))
}

/// A queue row, parsed: its position, whether it adds (else drops), and the event.
pub(crate) fn parse_row(key: &[u8], value: &[u8]) -> Result<Option<(u64, bool, OwnedEventId)>> {
    let (Some(pos), Some(op)) = (key.get(..8), key.get(8)) else { return Ok(None) };
    let pos = crate::store::pos_from(pos)?;
    let id = EventId::parse(crate::store::utf8(value)?).map_err(Error::internal)?;
    Ok(match *op {
        ADD => Some((pos, true, id)),
        DROP | PURGE => Some((pos, false, id)),
        _ => None,
    })
}
