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
    // 2: users (current state per account), their observed history, role changes joined with
    // audit evidence, and a log of user syncs and invitation polls.
    r#"
    CREATE TABLE users (
        account         TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        user_name       TEXT,
        email           TEXT,
        display_name    TEXT,
        user_type       TEXT,
        status          TEXT NOT NULL,      -- invited|active|locked|disabled|expired|deleted|unknown
        status_raw      TEXT NOT NULL,      -- as served ('' when absent)
        roles           TEXT NOT NULL,      -- JSON array of role codes/names, sorted
        created_ms      INTEGER,            -- the API's created_at
        last_login_ms   INTEGER,            -- the API's last sign-in (CertCentral last_login_date)
        container       TEXT,
        raw             TEXT NOT NULL,      -- the user object as last served
        -- Hash of every field above as served: an unchanged user is recognised without a write.
        fingerprint     INTEGER NOT NULL,
        first_seen_ms   INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,   -- last time a change was written
        invited_ms      INTEGER,            -- invitation time (created_at, else first seen invited)
        accepted_ms     INTEGER,            -- observed active after invited (upper bound)
        accepted_after_ms INTEGER,          -- last observation still invited (lower bound)
        accepted_at_ms  INTEGER,            -- the sign-in that accepted it, when the API tells
        deleted_ms      INTEGER,            -- observed gone (complete listing or 404)
        last_seen_ms    INTEGER,            -- for deleted users: the last observation present
        PRIMARY KEY (account, user_id)
    ) WITHOUT ROWID;

    -- Every observed change of a user's status or roles (and first sightings): when it was
    -- observed, and the last observation before it (so the change happened in between).
    CREATE TABLE user_history (
        seq             INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        observed_ms     INTEGER NOT NULL,
        after_ms        INTEGER,            -- the previous observation (NULL for a first sighting)
        field           TEXT NOT NULL,      -- first_seen | status | roles
        before          TEXT,
        after           TEXT,
        detail          TEXT,               -- raw statuses, or why (e.g. "missing from a complete listing")
        source          TEXT NOT NULL       -- sync | poll
    );
    -- Reports read one user's history in order.
    CREATE INDEX user_history_by_user ON user_history (account, user_id, seq);

    -- One row per role granted or revoked. Established from snapshots (after_ms..observed_ms) or
    -- from an audit event, and joined when both saw the same change (so it is counted once).
    CREATE TABLE role_changes (
        seq             INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        role            TEXT NOT NULL,
        change          TEXT NOT NULL,      -- granted | revoked
        observed_ms     INTEGER,            -- snapshot that showed it (NULL: audit log only)
        after_ms        INTEGER,            -- snapshot before it
        event_id        TEXT,               -- audit evidence
        event_ms        INTEGER,
        actor_id        TEXT,
        actor_name      TEXT,
        ip_address      TEXT,
        source          TEXT NOT NULL       -- snapshot | audit | snapshot+audit
    );
    -- One audit event proves each (role, change) once.
    CREATE UNIQUE INDEX role_changes_by_event ON role_changes (account, event_id, user_id, role, change)
        WHERE event_id IS NOT NULL;
    -- Evidence is matched to a user's open snapshot rows.
    CREATE INDEX role_changes_by_user ON role_changes (account, user_id, role, change);

    -- One row per user sync or invitation poll of an account.
    CREATE TABLE user_runs (
        id              INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        kind            TEXT NOT NULL,      -- sync | poll
        started_ms      INTEGER NOT NULL,
        finished_ms     INTEGER NOT NULL,
        complete        INTEGER NOT NULL,   -- the listing (or every poll) succeeded
        listed          INTEGER NOT NULL,
        changes         INTEGER NOT NULL,
        error           TEXT
    );
    CREATE INDEX user_runs_by_account ON user_runs (account, kind, id);

    -- Per account: audit events up to this seq have been matched to role changes.
    CREATE TABLE role_event_scan (
        account         TEXT PRIMARY KEY,
        last_seq        INTEGER NOT NULL
    );

    -- A user's last activity is their latest event as actor.
    CREATE INDEX events_by_actor ON events (account, actor_id, ts_ms);
    "#,
    // 3: alerts. An outbox: each alert is one row, keyed by (rule, account, evidence) so it is
    // written once ever; each configured sink gets a delivery row that moves pending -> sent, or
    // -> failed (the dead letter) after the last try. The scan marks say which role changes and
    // first sightings the rules have seen; they move in the transaction that writes the alerts.
    r#"
    CREATE TABLE alerts (
        id              INTEGER PRIMARY KEY,
        alert_key       TEXT NOT NULL UNIQUE,   -- rule|account|evidence: one alert per pair, ever
        uid             TEXT NOT NULL UNIQUE,   -- the webhook-id: stable across retries and restarts
        account         TEXT NOT NULL,
        rule            TEXT NOT NULL,
        severity        TEXT NOT NULL,
        at_ms           INTEGER,                -- when the change happened (event, else snapshot)
        summary         TEXT NOT NULL,
        payload         TEXT NOT NULL,          -- the JSON body sinks send
        suppressed      INTEGER NOT NULL,       -- older than the backfill horizon: kept, not sent
        created_ms      INTEGER NOT NULL
    );
    CREATE TABLE alert_deliveries (
        id              INTEGER PRIMARY KEY,
        alert_id        INTEGER NOT NULL REFERENCES alerts (id),
        sink            TEXT NOT NULL,
        status          TEXT NOT NULL,          -- pending | sent | failed
        attempts        INTEGER NOT NULL,
        last_error      TEXT,
        updated_ms      INTEGER NOT NULL,
        sent_ms         INTEGER,
        UNIQUE (alert_id, sink)
    );
    -- Delivery reads the pending rows of each sink in order.
    CREATE INDEX alert_deliveries_by_status ON alert_deliveries (status, sink, alert_id);
    CREATE TABLE alert_scan (
        account         TEXT PRIMARY KEY,
        role_seq        INTEGER NOT NULL,       -- role_changes evaluated up to this seq
        history_seq     INTEGER NOT NULL        -- user_history (first sightings) up to this seq
    );
    -- grant-burst counts one actor's grants in a time window.
    CREATE INDEX role_changes_by_actor ON role_changes (account, actor_id, event_ms);
    "#,
    // 4: hash chains (see `chain.rs`); `Store::migrate` builds the chains of rows already stored.
    CHAIN,
    // 5: delivery claims and retries across runs. A run claims a delivery (owner, lease) before
    // sending it and records the outcome only while the claim is still its own; a claim lapses at
    // `claim_until_ms`, or at once when its owner on this host has exited. A delivery its run could
    // not send waits for `next_attempt_ms` (backing off across runs); `failing_since_ms` starts the
    // `[alerts] give_up_after_hours` horizon after which it becomes a dead letter.
    r#"
    ALTER TABLE alert_deliveries ADD COLUMN claimed_by TEXT;        -- host:pid:random of the run
    ALTER TABLE alert_deliveries ADD COLUMN claim_until_ms INTEGER; -- the claim's lease
    ALTER TABLE alert_deliveries ADD COLUMN next_attempt_ms INTEGER; -- NULL: due now
    ALTER TABLE alert_deliveries ADD COLUMN failing_since_ms INTEGER; -- first run that could not send it
    ALTER TABLE alert_deliveries ADD COLUMN failed_runs INTEGER NOT NULL DEFAULT 0;
    "#,
    // What the server's rate limit did to a pass: its 429s and the pace the client settled at.
    r#"
    ALTER TABLE passes ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE passes ADD COLUMN pace_rps REAL;                    -- NULL: never limited
    "#,
    // Access-review campaigns (`auditwarden review`). A campaign
    // freezes its population (one item per account, user and role) with the population's SHA-256
    // and the chain heads of that moment; decisions are appended, never updated (a changed decision
    // is a new row, the earlier one stays as history); closing appends a closure row. Every row is
    // a link of the campaign's own chain (`chain_heads.chain = 'reviews'`, account `review-<id>`):
    // `review_links` gives each its position and canonical bytes, for the writer and `verify`.
    r#"
    CREATE TABLE review_campaigns (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL,
        scope           TEXT NOT NULL,      -- privileged | all
        accounts        TEXT NOT NULL,      -- account names, joined by char(31)
        reviewers       TEXT NOT NULL,      -- allowed reviewers (emails), joined by char(31); '' = anyone
        due_day         TEXT,               -- YYYY-MM-DD, or NULL
        started_ms      INTEGER NOT NULL,
        items           INTEGER NOT NULL,
        population_sha256 TEXT NOT NULL,    -- SHA-256 of the items' canonical bytes, in order
        chain_heads     TEXT NOT NULL,      -- "chain account n hash" lines, as of started_ms
        chain_n         INTEGER,
        chain_hash      BLOB
    );
    CREATE TABLE review_items (
        seq             INTEGER PRIMARY KEY,
        campaign_id     INTEGER NOT NULL REFERENCES review_campaigns (id),
        item_no         INTEGER NOT NULL,
        account         TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        user_name       TEXT,
        email           TEXT,
        user_type       TEXT,
        status          TEXT NOT NULL,
        role            TEXT NOT NULL,
        privileged      INTEGER NOT NULL,
        last_activity_ms INTEGER,
        activity_source TEXT,
        dormant         INTEGER NOT NULL,
        granted         TEXT NOT NULL,      -- how the role was granted, in words
        granted_ms      INTEGER,            -- the audit event's time, else the observing snapshot
        granted_by_id   TEXT,
        granted_by_name TEXT,
        granted_by_email TEXT,
        grant_event_id  TEXT,
        grant_ip        TEXT,
        chain_n         INTEGER,
        chain_hash      BLOB,
        UNIQUE (campaign_id, item_no)
    );
    CREATE TABLE review_decisions (
        seq             INTEGER PRIMARY KEY,
        campaign_id     INTEGER NOT NULL REFERENCES review_campaigns (id),
        item_no         INTEGER NOT NULL,
        decision        TEXT NOT NULL,      -- keep | revoke | unsure
        justification   TEXT NOT NULL,
        reviewer        TEXT NOT NULL,
        decided_ms      INTEGER NOT NULL,   -- when the file was imported
        source_file     TEXT NOT NULL,      -- the imported file's name
        source_sha256   TEXT NOT NULL,      -- and its SHA-256
        chain_n         INTEGER,
        chain_hash      BLOB
    );
    -- The current decision of an item is its latest row.
    CREATE INDEX review_decisions_by_item ON review_decisions (campaign_id, item_no, seq);
    CREATE TABLE review_closures (
        campaign_id     INTEGER PRIMARY KEY REFERENCES review_campaigns (id),
        closed_ms       INTEGER NOT NULL,
        decided         INTEGER NOT NULL,
        total           INTEGER NOT NULL,
        chain_n         INTEGER,
        chain_hash      BLOB
    );
    -- Every review row as a chain link: its chain (account), position, stored hash and canonical
    -- bytes (a JSON array of its columns, computed by SQLite both when written and when verified).
    CREATE VIEW review_links AS
        SELECT 'campaign' AS tbl, id AS seq, 'review-' || id AS account, chain_n, chain_hash,
            json_array('campaign', id, name, scope, accounts, reviewers, due_day, started_ms, items,
                population_sha256, chain_heads) AS canonical,
            'campaign ' || id AS key
        FROM review_campaigns
        UNION ALL
        SELECT 'item', seq, 'review-' || campaign_id, chain_n, chain_hash,
            json_array('item', campaign_id, item_no, account, user_id, user_name, email, user_type,
                status, role, privileged, last_activity_ms, activity_source, dormant, granted,
                granted_ms, granted_by_id, granted_by_name, granted_by_email, grant_event_id, grant_ip),
            'item ' || item_no || ' (' || account || ' ' || user_id || ' ' || role || ')'
        FROM review_items
        UNION ALL
        SELECT 'decision', seq, 'review-' || campaign_id, chain_n, chain_hash,
            json_array('decision', campaign_id, item_no, decision, justification, reviewer,
                decided_ms, source_file, source_sha256),
            'decision on item ' || item_no || ' by ' || reviewer
        FROM review_decisions
        UNION ALL
        SELECT 'closure', campaign_id, 'review-' || campaign_id, chain_n, chain_hash,
            json_array('closure', campaign_id, closed_ms, decided, total),
            'closure of campaign ' || campaign_id
        FROM review_closures;

    -- The credential alert rules (`credential-created`): audit events about API tokens and
    -- client-auth certificates evaluated up to this seq.
    ALTER TABLE alert_scan ADD COLUMN credential_seq INTEGER NOT NULL DEFAULT 0;
    "#,
    // The rules' results stored with their rows (see `crate::domain`); `Sqlite::migrate` fills
    // them for rows already stored, in Rust, in the same transaction (`domain_rules::backfill`).
    DOMAIN_RULES,
    // CertCentral Report Library runs (issue 15). A run is remembered from its creation, so a
    // pass that stops waiting for it (or is killed) picks the same run up next time instead of
    // creating another; `state` is pending until its rows and coverage are stored (done) or the
    // service says FAILED (failed: its days are requested again).
    r#"
    CREATE TABLE report_runs (
        account         TEXT NOT NULL,
        report_id       TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        start_day       TEXT NOT NULL,      -- the run's UTC days, inclusive
        end_day         TEXT NOT NULL,
        state           TEXT NOT NULL,      -- pending | done | failed
        status          TEXT,               -- the service's last status (an open set)
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,
        rows            INTEGER,            -- rows downloaded, once done
        note            TEXT,               -- why it failed
        PRIMARY KEY (account, run_id)
    ) WITHOUT ROWID;
    -- Each pass looks up its account's pending runs.
    CREATE INDEX report_runs_by_state ON report_runs (account, state);
    "#,
    // Scheduled ticks claimed (issue 13): a job that must run once per tick across several
    // daemons on one database (the report set) inserts (job, tick) before it runs; the primary
    // key lets one insert win. One host's daemons share the file, so SQLite keeps it too.
    r#"
    CREATE TABLE job_ticks (
        job             TEXT NOT NULL,
        tick_ms         INTEGER NOT NULL,   -- the scheduled instant, ms since the epoch
        node            TEXT NOT NULL,      -- who claimed it (`[daemon] node_name`)
        claimed_ms      INTEGER NOT NULL,
        PRIMARY KEY (job, tick_ms)
    ) WITHOUT ROWID;
    "#,
    // Cheaper deduplication of audit events (issue 11), see [`EVENT_KEYS`].
    EVENT_KEYS,
    // The failed sign-ins the `failed-sign-ins` rule reads after every pass (`sign_ins.rs`: the
    // last 8 days of failed logins): by `events_by_time` that read every event of those days, a
    // quarter of a 30-day history, and was most of an idle daemon's CPU and memory per pass
    // (issue 11). Partial, so only failed logins cost anything to maintain, and covering, so the
    // rows themselves are not read; its WHERE is spelled as the query spells it.
    r#"
    CREATE INDEX events_failed_sign_ins ON events (account, ts_ms, event_id, actor_id,
        actor_name, ip_address, action, status)
        WHERE action = 'login' AND status = 'failure';
    "#,
];

/// The migration that replaces the `UNIQUE (account, event_id)` index of `events` with an index
/// on `event_key`, a 64-bit integer derived from the event id (`store::event_key`): the text
/// index took random keys of ~50 bytes (UUIDs), so past a few hundred thousand events it no
/// longer fitted the page cache and each insert read and rewrote one of its pages; the integer
/// index is about a third of its size. The key is not unique (two ids may share one): the writer
/// inserts an event only if no row has its key, account and id, which is what the constraint
/// did. SQLite cannot drop a table constraint, so the table is rebuilt (same columns, same `seq`,
/// same chain links) and its indexes made again; `Sqlite::migrate` then fills `event_key` of the
/// rows it copied, from Rust, in the same transaction (`event_keys::backfill`).
pub const EVENT_KEYS: &str = r#"
    CREATE TABLE events_keyed (
        seq             INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        ts_ms           INTEGER NOT NULL,
        day             TEXT NOT NULL,
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
        raw             TEXT NOT NULL,
        collected_ms    INTEGER NOT NULL,
        chain_n         INTEGER,
        chain_hash      BLOB,
        -- `sqlite::event_key(event_id)`; NULL only for rows auditwarden did not write.
        event_key       INTEGER
    );
    INSERT INTO events_keyed (seq, account, event_id, ts_ms, day, action, resource_type,
        resource_id, resource_name, actor_id, actor_name, status, ip_address, description, data,
        raw, collected_ms, chain_n, chain_hash)
    SELECT seq, account, event_id, ts_ms, day, action, resource_type, resource_id, resource_name,
        actor_id, actor_name, status, ip_address, description, data, raw, collected_ms, chain_n,
        chain_hash
    FROM events;
    DROP TABLE events;
    ALTER TABLE events_keyed RENAME TO events;
    -- As before: exports and reports read one account's events by time range; a user's last
    -- activity is their latest event as actor.
    CREATE INDEX events_by_time ON events (account, ts_ms);
    CREATE INDEX events_by_actor ON events (account, actor_id, ts_ms);
    -- The dedup lookup (and `event_action`): key first, then account and id from the row.
    CREATE INDEX events_by_key ON events (event_key);
    -- After each pass the alert rules read an account's new credential events and the user sync
    -- its new user-change events: without these they scanned every new row (all of them after a
    -- backfill). Partial, so only the few rows they hold cost anything to maintain; their WHERE
    -- is spelled as the queries spell it (`credentials.rs`, `users.rs`), or SQLite cannot use them.
    CREATE INDEX events_credentials ON events (account, seq)
        WHERE resource_type IN ('api_token', 'client_auth_certificate');
    CREATE INDEX events_user_changes ON events (account, seq)
        WHERE resource_type IN ('user', 'service_user') AND action IN ('create', 'update');
"#;

/// The migration that stores the domain rules' results with the rows (issue 12): whether a user
/// is privileged, written with the user; which role change an alert was raised on, written with
/// the alert; and user fingerprints recomputed as SHA-256. Named so that `Store::migrate` can
/// recognise it and run the Rust backfill, whatever its position in the list.
pub const DOMAIN_RULES: &str = r#"
    -- `domain::is_privileged` of the user's roles, written with the user: reports order and
    -- filter by it without re-deriving the rule in SQL.
    ALTER TABLE users ADD COLUMN privileged INTEGER NOT NULL DEFAULT 0;
    -- The role change (role_changes.seq) an alert was raised on (NULL: a first sighting). The
    -- role-change report's "flagged" column joins on it, so it agrees with the alerts even after
    -- audit evidence is attached to a snapshot row (which changes its evidence key).
    ALTER TABLE alerts ADD COLUMN role_change_seq INTEGER;
    -- The report asks "alerts of this role change" once per row.
    CREATE INDEX alerts_by_role_change ON alerts (role_change_seq) WHERE role_change_seq IS NOT NULL;
    -- Alerts written before: the role change whose evidence key (as `alert::rules::Grant::
    -- evidence_key` builds it) is the alert's, as the report matched them until now.
    UPDATE alerts SET role_change_seq = (
        SELECT MIN(rc.seq) FROM role_changes rc
        WHERE rc.account = alerts.account AND alerts.alert_key = alerts.rule || '|' || rc.account
            || '|' || CASE WHEN rc.event_id IS NOT NULL
                THEN 'event:' || rc.event_id || ':' || rc.user_id || ':' || rc.role
                ELSE 'snapshot:' || rc.user_id || ':' || rc.role || ':'
                    || COALESCE(rc.after_ms, 0) || '..' || COALESCE(rc.observed_ms, 0)
                END);
"#;

/// The migration that introduces hash chains. Named so that `Store::migrate` can recognise it and
/// build the chains of existing rows in the same transaction, whatever its position in the list.
pub const CHAIN: &str = r#"
    -- Each row's position in its account's chain and SHA-256(previous link || canonical bytes).
    -- NULL only for rows that auditwarden did not write (verify reports them).
    ALTER TABLE events ADD COLUMN chain_n INTEGER;
    ALTER TABLE events ADD COLUMN chain_hash BLOB;
    ALTER TABLE user_history ADD COLUMN chain_n INTEGER;
    ALTER TABLE user_history ADD COLUMN chain_hash BLOB;

    -- The latest link of each chain, moved in the same transaction as the rows it covers: the
    -- writer extends chains without a lookup per row, and verify sees a deleted tail.
    CREATE TABLE chain_heads (
        chain           TEXT NOT NULL,      -- events | user_history
        account         TEXT NOT NULL,
        n               INTEGER NOT NULL,   -- rows in the chain
        head            BLOB NOT NULL,      -- chain_hash of row n (the genesis hash when n = 0)
        PRIMARY KEY (chain, account)
    ) WITHOUT ROWID;
"#;
