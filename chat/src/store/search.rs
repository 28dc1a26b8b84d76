//! Full-text search: the one part of the chat store whose SQL differs in more than a word
//! (PostgreSQL's `tsvector` and GIN, SQLite's FTS5), so [`ChatStore::search_messages`]
//! runs the statements of its pool's backend.
//!
//! Both run the same plan in two steps. First the newest [`SearchQuery::window`] matches
//! among the messages of the caller's conversations (membership is a condition of the
//! query itself, so no other conversation can appear), found through the word index.
//! Then those are ranked (PostgreSQL's `ts_rank`; on SQLite BM25's frequency and length
//! parts, see [`rank_window`]), ties by recency, and the page at the cursor's offset is
//! cut out of them. Bounding the ranked set keeps a common word (matching a good part of
//! a million messages) about as fast as a rare one.

use super::{ChatStore, MessageRow, StoreError, conversations::MEMBERSHIP_IDS};
use crate::domain::{Kind, Message};
use crate::search::{SearchHit, SearchQuery, Snippet};
use platform::{
    on_tx,
    sql::{Backend, Transaction},
};
use uuid::Uuid;

impl ChatStore {
    /// The messages matching a search in the conversations its user belongs to (decided
    /// in the same query), ranked best first, ties newest first: at most `query.limit`
    /// hits after `query.after`, among the newest `query.window` matches up to
    /// `query.snapshot`.
    pub async fn search_messages(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        // One read transaction: the conversations, the page and its snippets agree.
        let mut tx = self.pool.begin_read().await?;
        let conversations = searched_conversations(&mut tx, query).await?;
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let hits = match tx.backend() {
            Backend::Postgres => search_postgres(&mut tx, query, &conversations).await?,
            Backend::Sqlite => search_sqlite(&mut tx, query, &conversations).await?,
        };
        tx.commit().await?;
        Ok(hits)
    }
}

/// The conversations a search looks in: the one it names, or every one of its user's.
/// (Membership of the one named is checked again by the search's own statement.)
async fn searched_conversations(
    tx: &mut Transaction,
    query: &SearchQuery,
) -> Result<Vec<Uuid>, sqlx::Error> {
    match query.conversation {
        Some(conversation) => Ok(vec![conversation]),
        None => on_tx!(tx, |tx| {
            sqlx::query_scalar(MEMBERSHIP_IDS)
                .bind(query.user)
                .fetch_all(&mut **tx)
                .await
        }),
    }
}

/// Indexes the messages just inserted in `tx` (`ids`: one chunk of a batch, at most 500)
/// where the index does not follow inserts by itself: SQLite's FTS5 table, with one
/// `INSERT … SELECT` per batch in the batch's transaction (so a message is searchable
/// exactly when it is stored). A trigger per row did the same at about three times the
/// cost (PERFORMANCE.md, "What the search index costs a send"). PostgreSQL's stored
/// `body_words` column is generated from `body` on insert: nothing to do there.
pub(super) async fn index_inserted(tx: &mut Transaction, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if tx.backend() != Backend::Sqlite || ids.is_empty() {
        return Ok(());
    }
    on_tx!(tx, |tx| {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO messages_fts (rowid, body, conversation_key) \
             SELECT rowid, body, conversation_key FROM messages WHERE id IN (",
        );
        let mut list = insert.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        insert.push(")");
        insert.build().execute(&mut **tx).await.map(drop)
    })
}

/// A matching message with its conversation, score and marked text.
#[derive(sqlx::FromRow)]
struct HitRow {
    #[sqlx(flatten)]
    message: MessageRow,
    kind: String,
    name: Option<String>,
    score: f64,
    /// The snippet (PostgreSQL) or the whole body (SQLite) with the matched words marked.
    snippet: Option<String>,
}

/// Longest snippet made from a whole highlighted body (SQLite), in characters.
const SNIPPET_CHARS: usize = 240;

impl HitRow {
    /// The hit, its snippet made from `marked` (the body when `None`).
    fn into_hit(self, marked: Option<&str>) -> Result<SearchHit, sqlx::Error> {
        let conversation_kind = Kind::from_stored(&self.kind).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown conversation kind {:?}", self.kind).into())
        })?;
        let message = Message::from(self.message);
        let snippet = Snippet::from_marked(marked.unwrap_or(&message.body));
        Ok(SearchHit {
            message,
            conversation_kind,
            conversation_name: self.name.unwrap_or_default(),
            score: self.score,
            snippet,
        })
    }
}

/// PostgreSQL: the share of messages the words are expected to match together (each
/// word's share from the planner's statistics of `body_words`, multiplied; a word not
/// among the most common counts as rare). `$1` words.
const POSTGRES_SHARE: &str = "\
SELECT COALESCE(exp(sum(ln(COALESCE(common.share, 0.0001))))::float8, 1.0)
FROM unnest(tsvector_to_array(to_tsvector('simple', $1))) AS word(lexeme)
LEFT JOIN (
    SELECT unnest(most_common_elems::text::text[]) AS lexeme,
           unnest(most_common_elem_freqs) AS share
    FROM pg_stats
    WHERE schemaname = current_schema() AND tablename = 'messages' AND attname = 'body_words'
) common USING (lexeme)";

/// From this expected share of matches on, the window is found by walking the newest
/// messages ([`postgres_window_merged`]): at 2 %, 200 matches take some 10,000 rows.
/// Below it, by the word's GIN bitmap ANDed with the caller's conversations'
/// ([`POSTGRES_WINDOW_SPARSE`]), which reads the word's whole index entry once.
const WALK_SHARE: f64 = 0.02;

/// PostgreSQL: the window's matches for words of few messages: the GIN bitmap of the
/// words ANDed with the b-tree bitmap of the caller's conversations (from `memberships`
/// in the same query). Also used when the caller is in more than
/// [`MERGED_CONVERSATIONS`]. `$1` user, `$2` words, `$3` conversation or NULL, `$4`
/// snapshot, `$5` window.
const POSTGRES_WINDOW_SPARSE: &str = "\
    SELECT m.id FROM messages m
    WHERE m.body_words @@ plainto_tsquery('simple', $2)
      AND m.conversation_id = ANY (ARRAY(
          SELECT mine.conversation_id FROM memberships mine
          WHERE mine.user_id = $1 AND ($3::uuid IS NULL OR mine.conversation_id = $3)))
      AND m.id <= $4
    ORDER BY m.id DESC
    LIMIT $5";

/// Up to this many conversations, the window is one branch per conversation merged in id
/// order ([`postgres_window_merged`]).
const MERGED_CONVERSATIONS: usize = 64;

/// PostgreSQL: the window's matches as the newest of one branch per conversation (ids
/// from `$8` on), each branch only if the caller is a member (checked in the query).
/// PostgreSQL merges the branches newest first (Merge Append) and stops when the window
/// is full. For a common word each branch walks its conversation's newest messages
/// backwards, testing their stored words: a few hundred rows in all, where taking each
/// conversation's window whole would read thousands. For a rare word each branch ANDs
/// the word's GIN bitmap with its conversation's. The planner chooses by the word, so the
/// statement is planned for each search's own values (never prepared once).
fn postgres_window_merged(conversations: usize) -> String {
    let branches: Vec<String> = (8..8 + conversations)
        .map(|k| {
            format!(
                "(SELECT m.id FROM messages m \
                 WHERE m.conversation_id = ${k} \
                   AND m.body_words @@ plainto_tsquery('simple', $2) AND m.id <= $4 \
                   AND ($3::uuid IS NULL OR ${k} = $3) \
                   AND EXISTS (SELECT 1 FROM memberships mine \
                               WHERE mine.conversation_id = ${k} AND mine.user_id = $1) \
                 ORDER BY m.id DESC LIMIT $5)"
            )
        })
        .collect();
    format!(
        "SELECT branch.id FROM ({}) branch ORDER BY branch.id DESC LIMIT $5",
        branches.join(" UNION ALL ")
    )
}

/// PostgreSQL: a page of the ranked window (`$6` offset, `$7` limit), with snippets.
fn postgres_search(window: &str) -> String {
    format!(
        "WITH window_ AS MATERIALIZED ({window}), \
         cut AS ( \
             SELECT m.id, m.conversation_id, m.sender_id, m.sender_name, m.body, m.created_at, \
                    m.edited_at, m.deleted_at, \
                    ts_rank(m.body_words, plainto_tsquery('simple', $2))::float8 AS score \
             FROM window_ JOIN messages m ON m.id = window_.id \
             ORDER BY score DESC, m.id DESC \
             OFFSET $6 LIMIT $7) \
         SELECT cut.id, cut.conversation_id, cut.sender_id, cut.sender_name, cut.body, \
                cut.created_at, cut.edited_at, cut.deleted_at, cut.score, c.kind, c.name, \
                ts_headline('simple', cut.body, plainto_tsquery('simple', $2), \
                    'StartSel=\u{1}, StopSel=\u{2}, MaxWords=40, MinWords=15, ShortWord=0') \
                AS snippet \
         FROM cut JOIN conversations c ON c.id = cut.conversation_id \
         ORDER BY cut.score DESC, cut.id DESC"
    )
}

/// The page of hits of `query` on PostgreSQL, in `conversations` (not empty).
async fn search_postgres(
    tx: &mut Transaction,
    query: &SearchQuery,
    conversations: &[Uuid],
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let share: f64 = on_tx!(&mut *tx, |tx| {
        sqlx::query_scalar(POSTGRES_SHARE)
            .bind(query.text.plain())
            .fetch_one(&mut **tx)
            .await
    })?;
    let merged = share >= WALK_SHARE && conversations.len() <= MERGED_CONVERSATIONS;
    let sql = if merged {
        // Walk each conversation's newest messages: a bitmap of such a word (or of each
        // branch) would read a good part of the word's index entry per branch.
        on_tx!(&mut *tx, |tx| {
            sqlx::query("SET LOCAL enable_bitmapscan = off")
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        postgres_search(&postgres_window_merged(conversations.len()))
    } else {
        postgres_search(POSTGRES_WINDOW_SPARSE)
    };
    let branches: &[Uuid] = if merged { conversations } else { &[] };
    // Not a prepared statement: PostgreSQL plans the unnamed one for the values bound (a
    // prepared one would soon get a generic plan, the same for every word).
    let rows: Vec<HitRow> = on_tx!(tx, |tx| {
        let mut select = sqlx::query_as(&sql)
            .persistent(false)
            .bind(query.user)
            .bind(query.text.plain())
            .bind(query.conversation)
            .bind(query.snapshot)
            .bind(i64::from(query.window))
            .bind(i64::from(query.offset))
            .bind(i64::from(query.limit));
        for conversation in branches {
            select = select.bind(*conversation);
        }
        select.fetch_all(&mut **tx).await
    })?;
    rows.into_iter()
        .map(|row| {
            let snippet = row.snippet.clone();
            row.into_hit(snippet.as_deref())
        })
        .collect()
}

/// SQLite: the window, newest first. `$1` user, `$2` the FTS5 query ([`fts5_query`]),
/// `$3` conversation or NULL, `$4` snapshot, `$5` window. FTS5 walks the matching rows
/// newest first (`rowid DESC`, the order messages were stored in) and stops when the
/// window is full; each is looked up in `messages` by rowid, where membership is checked
/// again in SQL. `highlight` marks the matched words of each body (it reads that row
/// only); the ranking is done on these rows ([`rank_window`]), not with FTS5's `bm25`,
/// which counts every row holding each word for its weights: the whole index entry of a
/// common word, hundreds of thousands of rows, on every search.
const SQLITE_WINDOW: &str = "\
SELECT m.id, m.conversation_id, m.sender_id, m.sender_name, m.body, m.created_at,
       m.edited_at, m.deleted_at,
       c.kind, c.name, 0.0 AS score,
       highlight(messages_fts, 0, char(1), char(2)) AS snippet
FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
     JOIN conversations c ON c.id = m.conversation_id
WHERE messages_fts MATCH $2
  AND m.conversation_id IN (
      SELECT mine.conversation_id FROM memberships mine WHERE mine.user_id = $1)
  AND ($3 IS NULL OR m.conversation_id = $3)
  AND m.id <= $4
ORDER BY messages_fts.rowid DESC
LIMIT $5";

/// BM25's term frequency and length parts (k1 = 1.2, b = 0.75) over the window: a body
/// scores higher the more of its words are matches and the shorter it is against the
/// window's average. (Every hit holds every word of the search, so BM25's word weights
/// would only weigh the words against each other.) Ties: newest first. The scores depend
/// on the window alone, so every page of a search ranks alike.
fn rank_window(rows: Vec<HitRow>) -> Vec<HitRow> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let lengths: Vec<f64> = rows
        .iter()
        .map(|row| words_in(&row.message.body).max(1) as f64)
        .collect();
    let average = lengths.iter().sum::<f64>() / lengths.len().max(1) as f64;
    let mut rows: Vec<HitRow> = rows
        .into_iter()
        .zip(lengths)
        .map(|(mut row, length)| {
            let marked = row.snippet.as_deref().unwrap_or_default();
            let matches = marked.matches(crate::search::MARK_START).count() as f64;
            row.score = matches * (K1 + 1.0) / (matches + K1 * (1.0 - B + B * length / average));
            row
        })
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.message.id.cmp(&a.message.id))
    });
    rows
}

/// How many words a body has, as FTS5's unicode61 splits them (near enough: runs of
/// letters and digits).
fn words_in(body: &str) -> usize {
    body.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .count()
}

/// The FTS5 query of a search: the words in the body column only, and, for a caller in
/// at most [`MERGED_CONVERSATIONS`] conversations, one of those conversations (their
/// keys, as the `conversation_key` column holds them): FTS5 then intersects the word's
/// rows with the conversations' as it walks them, instead of looking up every message
/// of a common word in `messages` to find the few of the caller's.
fn fts5_query(query: &SearchQuery, conversations: &[Uuid]) -> String {
    let words = format!("body : ({})", query.text.fts5());
    if conversations.is_empty() || conversations.len() > MERGED_CONVERSATIONS {
        return words;
    }
    let keys: Vec<String> = conversations
        .iter()
        .map(|id| format!("\"{}\"", id.simple()))
        .collect();
    format!("{words} AND conversation_key : ({})", keys.join(" OR "))
}

/// The page of hits of `query` on SQLite, in `conversations` (not empty).
async fn search_sqlite(
    tx: &mut Transaction,
    query: &SearchQuery,
    conversations: &[Uuid],
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let window: Vec<HitRow> = on_tx!(tx, |tx| {
        sqlx::query_as(SQLITE_WINDOW)
            .bind(query.user)
            .bind(fts5_query(query, conversations))
            .bind(query.conversation)
            .bind(query.snapshot)
            .bind(i64::from(query.window))
            .fetch_all(&mut **tx)
            .await
    })?;
    rank_window(window)
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .map(|row| {
            let marked = row.snippet.clone();
            let hit = row.into_hit(marked.as_deref())?;
            Ok(SearchHit {
                snippet: hit.snippet.around_first_match(SNIPPET_CHARS),
                ..hit
            })
        })
        .collect()
}
