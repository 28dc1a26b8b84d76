//! Full-text search in each backend: the one part of the chat store whose SQL differs in
//! more than a word (PostgreSQL's `tsvector` and GIN, SQLite's FTS5), so each backend has
//! its own [`SearchSql`] and `sql_chat_store!` calls the one of its database.
//!
//! Both run the same plan in two steps. First the newest [`SearchQuery::window`] matches
//! among the messages of the caller's conversations (membership is a condition of the
//! query itself, so no other conversation can appear), found through the word index.
//! Then those are ranked (`ts_rank`, `bm25`), ties by recency, and the page at the
//! cursor's offset is cut out of them; only its rows get a snippet. Bounding the ranked set keeps a
//! common word (matching a good part of a million messages) as fast as a rare one.

use super::sql::MessageRow;
use crate::domain::{Kind, Message};
use crate::search::{SearchHit, SearchQuery, Snippet};
use async_trait::async_trait;
use std::collections::HashMap;

/// The search of one backend.
#[async_trait]
pub(super) trait SearchSql: sqlx::Database {
    /// The hits of `query`, best first (at most `query.limit`).
    async fn search(
        pool: &sqlx::Pool<Self>,
        query: &SearchQuery,
    ) -> Result<Vec<SearchHit>, sqlx::Error>;
}

#[derive(sqlx::FromRow)]
struct HitRow {
    #[sqlx(flatten)]
    message: MessageRow,
    kind: String,
    name: Option<String>,
    score: f64,
    /// Matched words wrapped in marks (PostgreSQL), or the FTS rowid to fetch it (SQLite).
    #[sqlx(default)]
    snippet: Option<String>,
    #[sqlx(default)]
    rid: Option<i64>,
}

impl HitRow {
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

/// PostgreSQL: `$1` user, `$2` words, `$3` conversation or NULL, `$4` snapshot, `$5`
/// window, `$6` offset, `$7` limit. The window's
/// condition on `conversation_id = ANY(...)` lets the planner AND the word's GIN bitmap
/// with the conversations' b-tree bitmap, so a common word costs the caller's share of
/// it; the ranked rows only then compute their `tsvector` again.
const POSTGRES_SEARCH: &str = "\
WITH window_ AS MATERIALIZED (
    SELECT m.id FROM messages m
    WHERE to_tsvector('simple', m.body) @@ plainto_tsquery('simple', $2)
      AND m.conversation_id = ANY (ARRAY(
          SELECT mine.conversation_id FROM memberships mine
          WHERE mine.user_id = $1 AND ($3::uuid IS NULL OR mine.conversation_id = $3)))
      AND m.id <= $4
    ORDER BY m.id DESC
    LIMIT $5
), cut AS (
    SELECT m.id, m.conversation_id, m.sender_id, m.sender_name, m.body, m.created_at,
           m.edited_at, m.deleted_at,
           ts_rank(to_tsvector('simple', m.body), plainto_tsquery('simple', $2))::float8 AS score
    FROM window_ JOIN messages m ON m.id = window_.id
    ORDER BY score DESC, m.id DESC
    OFFSET $6 LIMIT $7
)
SELECT cut.id, cut.conversation_id, cut.sender_id, cut.sender_name, cut.body, cut.created_at,
       cut.edited_at, cut.deleted_at, cut.score, c.kind, c.name,
       ts_headline('simple', cut.body, plainto_tsquery('simple', $2),
                   'StartSel=\u{1}, StopSel=\u{2}, MaxWords=40, MinWords=15, ShortWord=0') AS snippet
FROM cut JOIN conversations c ON c.id = cut.conversation_id
ORDER BY cut.score DESC, cut.id DESC";

#[async_trait]
impl SearchSql for sqlx::Postgres {
    async fn search(
        pool: &sqlx::Pool<Self>,
        query: &SearchQuery,
    ) -> Result<Vec<SearchHit>, sqlx::Error> {
        let rows: Vec<HitRow> = sqlx::query_as(POSTGRES_SEARCH)
            .bind(query.user)
            .bind(query.text.plain())
            .bind(query.conversation)
            .bind(query.snapshot)
            .bind(i64::from(query.window))
            .bind(i64::from(query.offset))
            .bind(i64::from(query.limit))
            .fetch_all(pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let snippet = row.snippet.clone();
                row.into_hit(snippet.as_deref())
            })
            .collect()
    }
}

/// SQLite: the same parameters as [`POSTGRES_SEARCH`], `$2` an FTS5 query of quoted
/// words. FTS5 walks the word's rows newest first (`rowid DESC`, the order messages were
/// stored in), each looked up in `messages` by rowid, until the window is full; `bm25`
/// is lower for better matches, hence its negation.
const SQLITE_SEARCH: &str = "\
WITH window_ AS MATERIALIZED (
    SELECT messages_fts.rowid AS rid, -bm25(messages_fts) AS score
    FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
    WHERE messages_fts MATCH $2
      AND m.conversation_id IN (
          SELECT mine.conversation_id FROM memberships mine WHERE mine.user_id = $1)
      AND ($3 IS NULL OR m.conversation_id = $3)
      AND m.id <= $4
    ORDER BY messages_fts.rowid DESC
    LIMIT $5
)
SELECT m.id, m.conversation_id, m.sender_id, m.sender_name, m.body, m.created_at,
       m.edited_at, m.deleted_at, w.score, w.rid, c.kind, c.name
FROM window_ w JOIN messages m ON m.rowid = w.rid JOIN conversations c ON c.id = m.conversation_id
ORDER BY w.score DESC, m.id DESC
LIMIT $7 OFFSET $6";

#[async_trait]
impl SearchSql for sqlx::Sqlite {
    async fn search(
        pool: &sqlx::Pool<Self>,
        query: &SearchQuery,
    ) -> Result<Vec<SearchHit>, sqlx::Error> {
        let words = query.text.fts5();
        // One read transaction: the snippets come from the rows the page was cut from.
        let mut tx = pool.begin().await?;
        let rows: Vec<HitRow> = sqlx::query_as(SQLITE_SEARCH)
            .bind(query.user)
            .bind(&words)
            .bind(query.conversation)
            .bind(query.snapshot)
            .bind(i64::from(query.window))
            .bind(i64::from(query.offset))
            .bind(i64::from(query.limit))
            .fetch_all(&mut *tx)
            .await?;
        let rids: Vec<i64> = rows.iter().filter_map(|row| row.rid).collect();
        let mut snippets = HashMap::new();
        if !rids.is_empty() {
            // FTS5's auxiliary functions run only in a query that matches; the page's rows
            // are found again by rowid, which FTS5 looks up directly.
            let sql = format!(
                "SELECT rowid, snippet(messages_fts, 0, char(1), char(2), '…', 32) \
                 FROM messages_fts WHERE messages_fts MATCH $1 AND rowid IN ({})",
                (2..rids.len() + 2)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut select = sqlx::query_as::<_, (i64, String)>(&sql).bind(&words);
            for rid in &rids {
                select = select.bind(rid);
            }
            snippets.extend(select.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        rows.into_iter()
            .map(|row| {
                let marked = row.rid.and_then(|rid| snippets.get(&rid)).cloned();
                row.into_hit(marked.as_deref())
            })
            .collect()
    }
}
