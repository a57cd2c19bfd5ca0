//! What a gateway keeps of its markets, in its SQLite file. A member: the settlement of every
//! book it checked (so that after a restart it still countersigns the market node's proposal
//! for it), and every book it refused, with its own order and the market node's receipt when
//! the refusal is about them: signed by the market node, the evidence of its misbehaviour. A
//! market node: every order it took for a book not closed yet, durable before its receipt goes
//! out (a receipt is a signature: a market node that restarts before the deadline still puts
//! every order it receipted in the book).

use std::path::Path;

use gridchan_channel::market::{Book, Receipt, Settlement, SignedOrder};
use gridchan_channel::{ChannelId, IntervalIndex};
use rusqlite::{params, Connection};

use crate::error::GatewayError;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS market_settlements (
        channel BLOB NOT NULL,
        interval INTEGER NOT NULL,
        settlement BLOB NOT NULL,
        PRIMARY KEY (channel, interval)
    );
    CREATE TABLE IF NOT EXISTS market_evidence (
        channel BLOB NOT NULL,
        interval INTEGER NOT NULL,
        reason TEXT NOT NULL,
        book BLOB NOT NULL,
        own_order BLOB,
        receipt BLOB,
        PRIMARY KEY (channel, interval)
    );
    CREATE TABLE IF NOT EXISTS market_orders (
        interval INTEGER NOT NULL,
        member BLOB NOT NULL,
        signed_order BLOB NOT NULL,
        PRIMARY KEY (interval, member)
    );";

/// Settlements kept per channel: the newest few intervals are all a restart can need.
const KEPT: i64 = 64;

/// A refused book as kept: the book, why, and our receipted order if we had one.
#[derive(Clone, Debug)]
pub struct Evidence {
    pub channel: ChannelId,
    pub interval: IntervalIndex,
    pub reason: String,
    pub book: Book,
    pub receipted: Option<(SignedOrder, Receipt)>,
}

pub struct MarketStore {
    conn: Connection,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("our own values encode")
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

impl MarketStore {
    /// Opens the store in the gateway's file; `market_node`: this gateway runs a market, and
    /// every write is durable at its commit (the orders it takes are followed by receipts).
    pub fn open(path: &Path, market_node: bool) -> Result<MarketStore, GatewayError> {
        let conn = crate::sqlite::open(path)?;
        // What a member keeps here can be had again (a market node sends a reconnecting member
        // the books it has still to sign): no fsync per settlement on the engine's thread; the
        // write-ahead log makes it durable at its next checkpoint.
        if !market_node {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.execute_batch(SCHEMA)?;
        Ok(MarketStore { conn })
    }

    /// The settlement of a book `channel`'s member checked.
    pub fn settled(&mut self, channel: &ChannelId, s: &Settlement) -> Result<(), GatewayError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO market_settlements (channel, interval, settlement)
             VALUES (?1, ?2, ?3)",
            params![channel.0.to_vec(), s.interval.0 as i64, encode(s)],
        )?;
        tx.execute(
            "DELETE FROM market_settlements WHERE channel = ?1 AND interval <= ?2",
            params![channel.0.to_vec(), s.interval.0 as i64 - KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// (Market node) orders taken, made durable in one transaction before their receipts go out.
    pub fn took(&mut self, orders: &[SignedOrder]) -> Result<(), GatewayError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO market_orders (interval, member, signed_order)
                 VALUES (?1, ?2, ?3)",
            )?;
            for o in orders {
                insert.execute(params![
                    o.order.interval.0 as i64,
                    o.order.member.to_vec(),
                    encode(o)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// (Market node) the orders taken for books after `closed`, oldest first.
    pub fn taken_after(
        &self,
        closed: Option<IntervalIndex>,
    ) -> Result<Vec<SignedOrder>, GatewayError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT signed_order FROM market_orders WHERE interval > ?1 ORDER BY interval, member",
        )?;
        let after = closed.map_or(-1, |c| c.0 as i64);
        let rows = stmt.query_map(params![after], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(decode::<SignedOrder>(&row?));
        }
        Ok(out)
    }

    /// (Market node) the book of `interval` closed: its orders, and older ones, are in it.
    pub fn closed(&self, interval: IntervalIndex) -> Result<(), GatewayError> {
        self.conn.execute(
            "DELETE FROM market_orders WHERE interval <= ?1",
            params![interval.0 as i64],
        )?;
        Ok(())
    }

    /// The settlements of `channel` kept, oldest first.
    pub fn settlements(&self, channel: &ChannelId) -> Result<Vec<Settlement>, GatewayError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT settlement FROM market_settlements WHERE channel = ?1 ORDER BY interval",
        )?;
        let rows = stmt.query_map(params![channel.0.to_vec()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(decode::<Settlement>(&row?));
        }
        Ok(out)
    }

    /// A book `channel`'s member refused, and why.
    pub fn refused(&self, e: &Evidence) -> Result<(), GatewayError> {
        let (order, receipt) = match &e.receipted {
            Some((o, r)) => (Some(encode(o)), Some(encode(r))),
            None => (None, None),
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO market_evidence
             (channel, interval, reason, book, own_order, receipt) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.channel.0.to_vec(),
                e.interval.0 as i64,
                e.reason,
                encode(&e.book),
                order,
                receipt
            ],
        )?;
        Ok(())
    }

    /// Every refused book kept, oldest first.
    pub fn evidence(&self) -> Result<Vec<Evidence>, GatewayError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT channel, interval, reason, book, own_order, receipt FROM market_evidence
             ORDER BY interval",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (channel, interval, reason, book, order, receipt) = row?;
            let (Ok(channel), Some(book)) = (<[u8; 32]>::try_from(channel), decode::<Book>(&book))
            else {
                continue;
            };
            let receipted = match (order, receipt) {
                (Some(o), Some(r)) => decode(&o).zip(decode(&r)),
                _ => None,
            };
            out.push(Evidence {
                channel: ChannelId(channel),
                interval: IntervalIndex(interval as u64),
                reason,
                book,
                receipted,
            });
        }
        Ok(out)
    }
}
