//! Why the running afk waits ([`Wait`]): kept in the ledger by the `afk run` that leads it, so
//! that `afk status`, another process, can say what holds the work up and whether a person must
//! act. One row per topic (what is held up); the ledger stores the texts it is given, which the
//! control plane has scrubbed of every secret.

use chrono::{DateTime, Utc};

use crate::model::millis;
use crate::{Ledger, LedgerError, Pool};

/// One reason the running afk waits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Wait {
    /// What is held up, e.g. `t3_read`, `t3_operate`, `github`.
    pub topic: String,
    /// The part at fault, e.g. `T3 at http://t3:3773`, `Vault secret … at https://vault:8200`.
    pub part: String,
    /// The whole reason, one line, with what a person must do (or that it will pass).
    pub message: String,
    /// Its class, e.g. `sealed`, `invalid_token`, `refused`, `unreachable`.
    pub kind: String,
    /// True when it stays until a person changes something.
    pub needs_person: bool,
    /// Since when afk waits for this reason.
    pub since: DateTime<Utc>,
    /// When the running afk last confirmed the reason (it does every few minutes while it lasts).
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct WaitRow {
    topic: String,
    part: String,
    message: String,
    kind: String,
    needs_person: bool,
    since: i64,
    updated_at: i64,
}

impl WaitRow {
    fn into_wait(self) -> Result<Wait, LedgerError> {
        let instant = |ms: i64, column: &str| {
            DateTime::from_timestamp_millis(ms).ok_or_else(|| LedgerError::Corrupt {
                what: format!(
                    "waits.{column} of topic {}: {ms} is not a representable instant",
                    self.topic
                ),
            })
        };
        Ok(Wait {
            since: instant(self.since, "since")?,
            updated_at: instant(self.updated_at, "updated_at")?,
            topic: self.topic,
            part: self.part,
            message: self.message,
            kind: self.kind,
            needs_person: self.needs_person,
        })
    }
}

impl Ledger {
    /// Records `wait` as the reason afk waits on its topic, replacing the topic's earlier one.
    pub async fn set_wait(&self, wait: &Wait) -> Result<(), LedgerError> {
        let sql = "INSERT INTO waits (topic, part, message, kind, needs_person, since, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (topic) DO UPDATE SET part = excluded.part, message = excluded.message, \
                   kind = excluded.kind, needs_person = excluded.needs_person, since = excluded.since, \
                   updated_at = excluded.updated_at";
        with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            sqlx::query(sql)
                .bind(&wait.topic)
                .bind(&wait.part)
                .bind(&wait.message)
                .bind(&wait.kind)
                .bind(wait.needs_person)
                .bind(millis(wait.since))
                .bind(millis(wait.updated_at))
                .execute(&mut *tx)
                .await?;
            Ok(())
        }))
    }

    /// Afk no longer waits on `topic`.
    pub async fn clear_wait(&self, topic: &str) -> Result<(), LedgerError> {
        with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            sqlx::query("DELETE FROM waits WHERE topic = $1")
                .bind(topic)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }))
    }

    /// Forgets every reason: an `afk run` that starts or stops leading the ledger knows none yet.
    pub async fn clear_waits(&self) -> Result<(), LedgerError> {
        with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            sqlx::query("DELETE FROM waits").execute(&mut *tx).await?;
            Ok(())
        }))
    }

    /// Every reason the running afk waits, by topic.
    pub async fn waits(&self) -> Result<Vec<Wait>, LedgerError> {
        let rows: Vec<WaitRow> = fetch!(self, fetch_all, "SELECT * FROM waits ORDER BY topic");
        rows.into_iter().map(WaitRow::into_wait).collect()
    }
}
