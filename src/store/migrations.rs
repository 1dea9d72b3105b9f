//! Append-only schema migrations. Each entry runs once, in order, inside a transaction, and bumps
//! `PRAGMA user_version`. Never edit a shipped entry: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: audit events, quarantine, per-day coverage, pass log.
    r#"
    CREATE TABLE events (
        -- Insertion order; later chains and exports follow it.
        seq             INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        ts_ms           INTEGER NOT NULL,   -- event time, UTC milliseconds
        day             TEXT NOT NULL,      -- UTC date of ts_ms, YYYY-MM-DD
        action          TEXT NOT NULL,
        resource_type   TEXT,
        resource_id     TEXT,
        resource_name   TEXT,
        actor_id        TEXT,
        actor_name      TEXT,
        status          TEXT,
        ip_address      TEXT,
        description     TEXT,
        data            TEXT,
        raw             TEXT NOT NULL,      -- the event exactly as received
        collected_ms    INTEGER NOT NULL,
        -- The dedup key: an event is stored once per account, however often it is read.
        UNIQUE (account, event_id)
    );
    -- Exports and reports read one account's events by time range.
    CREATE INDEX events_by_time ON events (account, ts_ms);

    -- Items that could not be understood: kept with the reason, never dropped.
    CREATE TABLE quarantine (
        seq             INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        item_key        TEXT NOT NULL,      -- the id, or sha256:<hex of raw> when there is none
        window_day      TEXT NOT NULL,      -- the day window it was served in
        action_filter   TEXT NOT NULL,
        reason          TEXT NOT NULL,
        raw             TEXT NOT NULL,
        first_seen_ms   INTEGER NOT NULL,
        UNIQUE (account, item_key)
    );

    -- Coverage: one row per (account, action filter, UTC day) that a pass has read. A row becomes
    -- complete in the same transaction as the last page of the read that proved it complete.
    CREATE TABLE coverage (
        account         TEXT NOT NULL,
        action_filter   TEXT NOT NULL,      -- '' when every action is collected
        day             TEXT NOT NULL,
        complete        INTEGER NOT NULL,
        server_total    INTEGER,            -- the server's total when read; NULL for bare arrays
        received        INTEGER NOT NULL,   -- distinct items received in that read
        read_ms         INTEGER NOT NULL,
        note            TEXT,               -- why a day is incomplete
        PRIMARY KEY (account, action_filter, day)
    ) WITHOUT ROWID;

    -- One row per collection pass per account.
    CREATE TABLE passes (
        id              INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        started_ms      INTEGER NOT NULL,
        finished_ms     INTEGER NOT NULL,
        ok              INTEGER NOT NULL,
        error           TEXT,
        new_events      INTEGER NOT NULL,
        duplicates      INTEGER NOT NULL,
        quarantined     INTEGER NOT NULL,
        requests        INTEGER NOT NULL,
        retries         INTEGER NOT NULL
    );
    -- `status` asks for each account's latest passes.
    CREATE INDEX passes_by_account ON passes (account, id);
    "#,
];
