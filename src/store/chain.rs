//! Hash chains over the stored history, so that an edit made behind auditwarden's back shows.
//!
//! Each account has two chains: its audit events and its user-history rows, each in insertion
//! order (`seq`). Row number `n` of a chain carries `chain_n = n` and
//! `chain_hash = SHA-256(previous hash || canonical bytes)`, where the canonical bytes of an event
//! are its `raw` text exactly as received, and those of a history row are a JSON array of its
//! columns. The first link follows a per-chain genesis hash, so two accounts' chains never share a
//! link. The latest link of every chain is kept in `chain_heads`, written in the same transaction
//! as the rows, so a deleted tail shows too.
//!
//! [`crate::store::Backend::verify_chains`] walks every chain in one streaming pass (memory grows with the number
//! of accounts, not of rows) and reports each finding as it meets it. What a local chain cannot
//! show on its own: someone who rewrites a row *and* every link after it *and* the head. Heads
//! recorded elsewhere (the signed report manifests) close that gap.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Which history a chain covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKind {
    Events,
    UserHistory,
    /// Access-review campaigns: one chain per campaign (account `review-<id>`) over its
    /// campaign, item, decision and closure rows (the `review_links` view, in link order).
    Reviews,
}

impl ChainKind {
    /// The chains every DigiCert account has (and report manifests record per account).
    pub const ALL: [ChainKind; 2] = [ChainKind::Events, ChainKind::UserHistory];
    /// Every chain `verify` walks.
    pub const EVERY: [ChainKind; 3] = [
        ChainKind::Events,
        ChainKind::UserHistory,
        ChainKind::Reviews,
    ];

    /// The name in `chain_heads.chain` (and the table the chain covers).
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Events => "events",
            ChainKind::UserHistory => "user_history",
            ChainKind::Reviews => "reviews",
        }
    }

    pub fn parse(s: &str) -> Option<ChainKind> {
        ChainKind::EVERY.into_iter().find(|k| k.as_str() == s)
    }
}

/// The latest link of a chain: how many rows it holds and the hash of the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub n: i64,
    pub hash: Hash,
}

impl ChainHead {
    /// The empty chain of one account: no rows, the genesis hash.
    pub fn genesis(kind: ChainKind, account: &str) -> ChainHead {
        let mut h = Sha256::new();
        h.update(b"auditwarden chain v1\0");
        h.update(kind.as_str().as_bytes());
        h.update(b"\0");
        h.update(account.as_bytes());
        ChainHead {
            n: 0,
            hash: h.finalize().into(),
        }
    }

    /// The head after appending a row with these canonical bytes.
    pub fn next(&self, canonical: &[u8]) -> ChainHead {
        ChainHead {
            n: self.n + 1,
            hash: link(&self.hash, canonical),
        }
    }
}

/// `SHA-256(prev || canonical)`: no allocation, the row's bytes are hashed in place.
pub fn link(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// The canonical bytes of a user-history row: its columns as a JSON array, in a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn history_bytes(
    user_id: &str,
    observed_ms: i64,
    after_ms: Option<i64>,
    field: &str,
    before: Option<&str>,
    after: Option<&str>,
    detail: Option<&str>,
    source: &str,
) -> Vec<u8> {
    // Serializing strings and integers into a Vec cannot fail.
    serde_json::to_vec(&(
        user_id,
        observed_ms,
        after_ms,
        field,
        before,
        after,
        detail,
        source,
    ))
    .unwrap_or_default()
}

/// Something `verify` found. Every variant names the chain, the account and the rows concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A row's stored hash does not follow from the previous link and the row's own bytes: the
    /// row (or its hash) was edited, or the previous row's hash was rewritten.
    BrokenLink {
        chain: ChainKind,
        account: String,
        seq: i64,
        key: String,
        n: i64,
        expected: Hash,
        found: Hash,
    },
    /// Chain positions with no row: rows deleted. `after_seq`/`before_seq` are the neighbours.
    Gap {
        chain: ChainKind,
        account: String,
        first_missing: i64,
        last_missing: i64,
        after_seq: Option<i64>,
        before_seq: i64,
    },
    /// A row that is not a link of its chain (no chain position, or a position already taken):
    /// inserted behind auditwarden's back.
    Unchained {
        chain: ChainKind,
        account: String,
        seq: i64,
        key: String,
        n: Option<i64>,
    },
    /// An event column that says something its `raw` text does not: the column was edited.
    ColumnEdited {
        account: String,
        seq: i64,
        key: String,
        column: &'static str,
        stored: String,
        from_raw: String,
    },
    /// The end of the chain is not the head recorded with the last write: rows deleted at the
    /// end, appended behind auditwarden's back, or the head itself edited.
    HeadMismatch {
        chain: ChainKind,
        account: String,
        recorded: Option<ChainHead>,
        found: ChainHead,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = |chain: &ChainKind| match chain {
            ChainKind::Events => "event",
            ChainKind::UserHistory => "user-history row of user",
            ChainKind::Reviews => "review",
        };
        match self {
            Finding::BrokenLink {
                chain,
                account,
                seq,
                key,
                n,
                expected,
                found,
            } => write!(
                f,
                "{account}: {} chain broken at row seq {seq} ({} {key:?}, link #{n}): expected hash {}, found {} (this row or its hash was edited, or the previous link was rewritten)",
                chain.as_str(),
                what(chain),
                hex::encode(expected),
                hex::encode(found)
            ),
            Finding::Gap {
                chain,
                account,
                first_missing,
                last_missing,
                after_seq,
                before_seq,
            } => {
                let links = if first_missing == last_missing {
                    format!("link #{first_missing} is")
                } else {
                    format!("links #{first_missing}..#{last_missing} are")
                };
                let after = after_seq
                    .map(|s| format!("after row seq {s} and "))
                    .unwrap_or_default();
                write!(
                    f,
                    "{account}: {} chain: {links} missing {after}before row seq {before_seq} (rows deleted)",
                    chain.as_str()
                )
            }
            Finding::Unchained {
                chain,
                account,
                seq,
                key,
                n,
            } => {
                let why = match n {
                    None => "it has no chain link".to_string(),
                    Some(n) => format!("its link #{n} is out of order or already taken"),
                };
                write!(
                    f,
                    "{account}: {} row seq {seq} ({} {key:?}) was not written by auditwarden: {why} (inserted behind auditwarden's back)",
                    chain.as_str(),
                    what(chain)
                )
            }
            Finding::ColumnEdited {
                account,
                seq,
                key,
                column,
                stored,
                from_raw,
            } => write!(
                f,
                "{account}: events row seq {seq} (event {key:?}): column {column} was edited: stored {stored:?}, the event as received says {from_raw:?}"
            ),
            Finding::HeadMismatch {
                chain,
                account,
                recorded,
                found,
            } => match recorded {
                None => write!(
                    f,
                    "{account}: {} chain has {} rows but no recorded head (rows inserted behind auditwarden's back, or the head deleted)",
                    chain.as_str(),
                    found.n
                ),
                Some(r) if found.n < r.n => write!(
                    f,
                    "{account}: {} chain ends at link #{} but the recorded head is link #{}: the last {} rows were deleted",
                    chain.as_str(),
                    found.n,
                    r.n,
                    r.n - found.n
                ),
                Some(r) => write!(
                    f,
                    "{account}: {} chain ends at link #{} with hash {}, but the recorded head is link #{} with hash {} (rows appended or the end rewritten behind auditwarden's back)",
                    chain.as_str(),
                    found.n,
                    hex::encode(found.hash),
                    r.n,
                    hex::encode(r.hash)
                ),
            },
        }
    }
}

/// What a walk covered: one entry per chain and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub chain: ChainKind,
    pub account: String,
    /// Rows read.
    pub rows: u64,
    /// The end of the chain as found.
    pub head: ChainHead,
}

/// One row of a chain as a backend reads it, for [`Walker::step`].
pub struct ChainRow<'a> {
    pub seq: i64,
    pub account: &'a str,
    /// The stored position and hash (`None`: the row has none).
    pub n: Option<i64>,
    pub stored: Option<Hash>,
    /// What names the row in a finding: the event id, or the history row's user id.
    pub key: &'a str,
    /// The canonical bytes (see [`history_bytes`]; an event's `raw`).
    pub canonical: &'a [u8],
}

/// Per account while walking one chain.
struct WalkState {
    head: ChainHead,
    last_seq: Option<i64>,
    rows: u64,
}

/// The backend-neutral walk of one chain kind: a backend streams its rows in `seq` order into
/// [`Walker::step`] and hands the recorded heads to [`Walker::finish`]. Memory grows with the
/// number of accounts, not of rows. After a finding the walk resynchronizes on the stored link,
/// so one edit is one finding.
pub struct Walker {
    kind: ChainKind,
    walks: std::collections::HashMap<String, WalkState>,
}

impl Walker {
    pub fn new(kind: ChainKind) -> Walker {
        Walker {
            kind,
            walks: std::collections::HashMap::new(),
        }
    }

    /// Check one row; returns whether it is a link of its chain (then an event's columns are
    /// worth checking against its raw text).
    pub fn step(&mut self, r: &ChainRow<'_>, found: &mut dyn FnMut(Finding)) -> bool {
        let kind = self.kind;
        let w = self
            .walks
            .entry(r.account.to_string())
            .or_insert_with(|| WalkState {
                head: ChainHead::genesis(kind, r.account),
                last_seq: None,
                rows: 0,
            });
        w.rows += 1;
        let unchained = |n| Finding::Unchained {
            chain: kind,
            account: r.account.to_string(),
            seq: r.seq,
            key: r.key.to_string(),
            n,
        };
        let (Some(n), Some(stored)) = (r.n, r.stored) else {
            found(unchained(r.n));
            return false;
        };
        if n <= w.head.n {
            found(unchained(Some(n)));
            return false;
        }
        if n > w.head.n + 1 {
            found(Finding::Gap {
                chain: kind,
                account: r.account.to_string(),
                first_missing: w.head.n + 1,
                last_missing: n - 1,
                after_seq: w.last_seq,
                before_seq: r.seq,
            });
        } else {
            let expected = link(&w.head.hash, r.canonical);
            if expected != stored {
                found(Finding::BrokenLink {
                    chain: kind,
                    account: r.account.to_string(),
                    seq: r.seq,
                    key: r.key.to_string(),
                    n,
                    expected,
                    found: stored,
                });
            }
        }
        w.head = ChainHead { n, hash: stored };
        w.last_seq = Some(r.seq);
        true
    }

    /// Compare each walked chain's end with its recorded head (`recorded`: this kind's heads of
    /// the accounts walked over), in account order; heads whose chain has no row left too.
    pub fn finish(
        self,
        mut recorded: std::collections::HashMap<String, ChainHead>,
        found: &mut dyn FnMut(Finding),
    ) -> Vec<ChainSummary> {
        let kind = self.kind;
        let mut out = Vec::new();
        let mut accounts: Vec<(String, WalkState)> = self.walks.into_iter().collect();
        accounts.sort_by(|a, b| a.0.cmp(&b.0));
        for (a, w) in accounts {
            let rec = recorded.remove(&a);
            if rec != Some(w.head) {
                found(Finding::HeadMismatch {
                    chain: kind,
                    account: a.clone(),
                    recorded: rec,
                    found: w.head,
                });
            }
            out.push(ChainSummary {
                chain: kind,
                account: a,
                rows: w.rows,
                head: w.head,
            });
        }
        let mut rest: Vec<(String, ChainHead)> = recorded.into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        for (a, rec) in rest {
            let empty = ChainHead::genesis(kind, &a);
            if rec != empty {
                found(Finding::HeadMismatch {
                    chain: kind,
                    account: a.clone(),
                    recorded: Some(rec),
                    found: empty,
                });
            }
            out.push(ChainSummary {
                chain: kind,
                account: a,
                rows: 0,
                head: empty,
            });
        }
        out
    }
}

/// The derived columns of a stored event, as a backend read them, in this order: `event_id`,
/// `day`, `action`, `resource_type`, `resource_id`, `resource_name`, `actor_id`, `actor_name`,
/// `status`, `ip_address`, `description`, `data`.
pub type EventColumns<'a> = [Option<&'a str>; 12];

/// The derived columns of an event must say what its `raw` text says (the chain covers `raw`).
pub fn check_event_columns(
    raw: &str,
    account: &str,
    seq: i64,
    stored_ms: Option<i64>,
    cols: &EventColumns<'_>,
    found: &mut dyn FnMut(Finding),
) {
    use crate::api::wire::{parse_event, ParsedEvent};
    let key = cols[0].unwrap_or_default().to_string();
    let ev = match parse_event(raw) {
        ParsedEvent::Event(ev) => ev,
        ParsedEvent::Malformed(m) => {
            found(Finding::ColumnEdited {
                account: account.to_string(),
                seq,
                key,
                column: "raw",
                stored: crate::api::wire::preview(raw),
                from_raw: m.reason,
            });
            return;
        }
    };
    let ts_ms = ev.timestamp.timestamp_millis();
    let day = super::day_str(ev.timestamp.date_naive());
    let edited = |column: &'static str, stored: String, from_raw: String| Finding::ColumnEdited {
        account: account.to_string(),
        seq,
        key: key.clone(),
        column,
        stored,
        from_raw,
    };
    if stored_ms != Some(ts_ms) {
        let stored = stored_ms.map(|v| v.to_string()).unwrap_or_default();
        found(edited("ts_ms", stored, ts_ms.to_string()));
    }
    let want: [(&'static str, Option<&str>); 12] = [
        ("event_id", Some(&ev.id)),
        ("day", Some(&day)),
        ("action", Some(&ev.action)),
        ("resource_type", ev.resource_type.as_deref()),
        ("resource_id", ev.resource_id.as_deref()),
        ("resource_name", ev.resource_name.as_deref()),
        ("actor_id", ev.actor_id.as_deref()),
        ("actor_name", ev.actor_name.as_deref()),
        ("status", ev.status.as_deref()),
        ("ip_address", ev.ip_address.as_deref()),
        ("description", ev.description.as_deref()),
        ("data", ev.data.as_deref()),
    ];
    for ((column, want), stored) in want.into_iter().zip(cols.iter()) {
        if *stored != want {
            let show = |v: Option<&str>| v.unwrap_or("NULL").to_string();
            found(edited(column, show(*stored), show(want)));
        }
    }
}
