//! The PostgreSQL schema: append-only migrations, numbered by their position, recorded in the
//! one row of `auditwarden_schema`. The same tables and columns as the SQLite schema at its
//! latest version (so `store copy` maps rows one to one), with PostgreSQL's types: `BIGINT` for
//! milliseconds and counters, `BOOLEAN` for flags, `BYTEA` for hashes, identity columns for
//! `seq`. Text that is compared or ordered (accounts, ids, days) is `COLLATE "C"`: byte order, as
//! SQLite compares, whatever the database's locale, so paging by id and exports sort the same.
//!
//! Migrations run under a row lock, not an advisory lock (those break behind PgBouncer's
//! transaction pooling): the migrating transaction takes `auditwarden_schema`'s row `FOR UPDATE`,
//! reads the version again under it and applies what is missing, DDL included (PostgreSQL's DDL
//! is transactional): a second process opening the same database waits and finds it done.

/// Creates the version table and its one row; safe to run by several processes at once (see
/// `Postgres::migrate`, which retries a lost race).
pub const BOOTSTRAP: &str = "
    CREATE TABLE IF NOT EXISTS auditwarden_schema (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO auditwarden_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
";

pub const MIGRATIONS: &[&str] = &[
    // 1: the whole schema of SQLite's migrations 1 to 5, plus `write_locks`.
    r#"
    CREATE TABLE events (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        event_id        TEXT COLLATE "C" NOT NULL,
        ts_ms           BIGINT NOT NULL,
        day             TEXT COLLATE "C" NOT NULL,
        action          TEXT NOT NULL,
        resource_type   TEXT,
        resource_id     TEXT COLLATE "C",
        resource_name   TEXT,
        actor_id        TEXT COLLATE "C",
        actor_name      TEXT,
        status          TEXT,
        ip_address      TEXT,
        description     TEXT,
        data            TEXT,
        raw             TEXT NOT NULL,
        collected_ms    BIGINT NOT NULL,
        chain_n         BIGINT,
        chain_hash      BYTEA,
        -- The dedup key: exactly once per account, whichever daemon reads it.
        UNIQUE (account, event_id)
    );
    CREATE INDEX events_by_time ON events (account, ts_ms);
    CREATE INDEX events_by_actor ON events (account, actor_id, ts_ms);
    CREATE INDEX events_by_seq ON events (account, seq);

    CREATE TABLE quarantine (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        item_key        TEXT COLLATE "C" NOT NULL,
        window_day      TEXT COLLATE "C" NOT NULL,
        action_filter   TEXT NOT NULL,
        reason          TEXT NOT NULL,
        raw             TEXT NOT NULL,
        first_seen_ms   BIGINT NOT NULL,
        UNIQUE (account, item_key)
    );

    CREATE TABLE coverage (
        account         TEXT COLLATE "C" NOT NULL,
        action_filter   TEXT COLLATE "C" NOT NULL,
        day             TEXT COLLATE "C" NOT NULL,
        complete        BOOLEAN NOT NULL,
        server_total    BIGINT,
        received        BIGINT NOT NULL,
        read_ms         BIGINT NOT NULL,
        note            TEXT,
        PRIMARY KEY (account, action_filter, day)
    );

    CREATE TABLE passes (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        started_ms      BIGINT NOT NULL,
        finished_ms     BIGINT NOT NULL,
        ok              BOOLEAN NOT NULL,
        error           TEXT,
        new_events      BIGINT NOT NULL,
        duplicates      BIGINT NOT NULL,
        quarantined     BIGINT NOT NULL,
        requests        BIGINT NOT NULL,
        retries         BIGINT NOT NULL
    );
    CREATE INDEX passes_by_account ON passes (account, id);

    CREATE TABLE users (
        account         TEXT COLLATE "C" NOT NULL,
        user_id         TEXT COLLATE "C" NOT NULL,
        user_name       TEXT,
        email           TEXT,
        display_name    TEXT,
        user_type       TEXT,
        status          TEXT NOT NULL,
        status_raw      TEXT NOT NULL,
        roles           TEXT NOT NULL,
        created_ms      BIGINT,
        last_login_ms   BIGINT,
        container       TEXT,
        raw             TEXT NOT NULL,
        fingerprint     BIGINT NOT NULL,
        first_seen_ms   BIGINT NOT NULL,
        updated_ms      BIGINT NOT NULL,
        invited_ms      BIGINT,
        accepted_ms     BIGINT,
        accepted_after_ms BIGINT,
        accepted_at_ms  BIGINT,
        deleted_ms      BIGINT,
        last_seen_ms    BIGINT,
        PRIMARY KEY (account, user_id)
    );

    CREATE TABLE user_history (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        user_id         TEXT COLLATE "C" NOT NULL,
        observed_ms     BIGINT NOT NULL,
        after_ms        BIGINT,
        field           TEXT NOT NULL,
        before          TEXT,
        after           TEXT,
        detail          TEXT,
        source          TEXT NOT NULL,
        chain_n         BIGINT,
        chain_hash      BYTEA
    );
    CREATE INDEX user_history_by_user ON user_history (account, user_id, seq);
    CREATE INDEX user_history_by_seq ON user_history (account, seq);

    CREATE TABLE role_changes (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        user_id         TEXT COLLATE "C" NOT NULL,
        role            TEXT COLLATE "C" NOT NULL,
        change          TEXT NOT NULL,
        observed_ms     BIGINT,
        after_ms        BIGINT,
        event_id        TEXT COLLATE "C",
        event_ms        BIGINT,
        actor_id        TEXT COLLATE "C",
        actor_name      TEXT,
        ip_address      TEXT,
        source          TEXT NOT NULL
    );
    CREATE UNIQUE INDEX role_changes_by_event ON role_changes (account, event_id, user_id, role, change)
        WHERE event_id IS NOT NULL;
    CREATE INDEX role_changes_by_user ON role_changes (account, user_id, role, change);
    CREATE INDEX role_changes_by_actor ON role_changes (account, actor_id, event_ms);

    CREATE TABLE user_runs (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account         TEXT COLLATE "C" NOT NULL,
        kind            TEXT NOT NULL,
        started_ms      BIGINT NOT NULL,
        finished_ms     BIGINT NOT NULL,
        complete        BOOLEAN NOT NULL,
        listed          BIGINT NOT NULL,
        changes         BIGINT NOT NULL,
        error           TEXT
    );
    CREATE INDEX user_runs_by_account ON user_runs (account, kind, id);

    CREATE TABLE role_event_scan (
        account         TEXT COLLATE "C" PRIMARY KEY,
        last_seq        BIGINT NOT NULL
    );

    CREATE TABLE alerts (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_key       TEXT COLLATE "C" NOT NULL UNIQUE,
        uid             TEXT COLLATE "C" NOT NULL UNIQUE,
        account         TEXT COLLATE "C" NOT NULL,
        rule            TEXT NOT NULL,
        severity        TEXT NOT NULL,
        at_ms           BIGINT,
        summary         TEXT NOT NULL,
        payload         TEXT NOT NULL,
        suppressed      BOOLEAN NOT NULL,
        created_ms      BIGINT NOT NULL
    );
    CREATE TABLE alert_deliveries (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_id        BIGINT NOT NULL REFERENCES alerts (id),
        sink            TEXT COLLATE "C" NOT NULL,
        status          TEXT NOT NULL,
        attempts        BIGINT NOT NULL,
        last_error      TEXT,
        updated_ms      BIGINT NOT NULL,
        sent_ms         BIGINT,
        claimed_by      TEXT,
        claim_until_ms  BIGINT,
        next_attempt_ms BIGINT,
        failing_since_ms BIGINT,
        failed_runs     BIGINT NOT NULL DEFAULT 0,
        UNIQUE (alert_id, sink)
    );
    CREATE INDEX alert_deliveries_by_status ON alert_deliveries (status, sink, alert_id);
    CREATE TABLE alert_scan (
        account         TEXT COLLATE "C" PRIMARY KEY,
        role_seq        BIGINT NOT NULL,
        history_seq     BIGINT NOT NULL
    );

    CREATE TABLE chain_heads (
        chain           TEXT COLLATE "C" NOT NULL,
        account         TEXT COLLATE "C" NOT NULL,
        n               BIGINT NOT NULL,
        head            BYTEA NOT NULL,
        PRIMARY KEY (chain, account)
    );

    -- One row per (scope, account), taken FOR UPDATE by every write transaction of that scope
    -- and account: `events` (pages, the event chain), `users` (user batches, role changes and
    -- their links, the user-history chain). Writers of one account queue on it, so its rows get
    -- their `seq` and chain links in commit order, and a reader moving a `seq` watermark never
    -- skips a row committed late. Writers of different accounts never wait for each other.
    -- The leases of several daemons will be rows of their own (owner, epoch, expiry), checked in
    -- these same transactions.
    CREATE TABLE write_locks (
        scope           TEXT COLLATE "C" NOT NULL,
        account         TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (scope, account)
    );
    "#,
    // 2: leases of several daemons sharing the accounts: one row per API key (accounts that
    // share a key share one throttle, so one lease), the owner (`[daemon] node_name`), an epoch
    // that grows with every takeover (the fencing token every write transaction checks, see
    // `LeaseStore`), and the expiry a heartbeat moves.
    r#"
    CREATE TABLE leases (
        lease_key       TEXT COLLATE "C" PRIMARY KEY,
        owner           TEXT NOT NULL,
        epoch           BIGINT NOT NULL,
        acquired_ms     BIGINT NOT NULL,
        expires_ms      BIGINT NOT NULL
    );
    "#,
    // 3: what the SQLite schema gained beside this backend: a pass's rate limit (its 429s and
    // the pace it settled at), the privileged rule's result stored with each user, the role
    // change an alert was raised on, the credential rules' scan mark, and the CertCentral Report
    // Library runs (remembered from their creation, so a pass that stops waiting for one picks
    // the same run up next time).
    r#"
    ALTER TABLE passes ADD COLUMN rate_limited BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE passes ADD COLUMN pace_rps DOUBLE PRECISION;
    ALTER TABLE users ADD COLUMN privileged BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE alerts ADD COLUMN role_change_seq BIGINT;
    CREATE INDEX alerts_by_role_change ON alerts (role_change_seq)
        WHERE role_change_seq IS NOT NULL;
    ALTER TABLE alert_scan ADD COLUMN credential_seq BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE report_runs (
        account         TEXT COLLATE "C" NOT NULL,
        report_id       TEXT NOT NULL,
        run_id          TEXT COLLATE "C" NOT NULL,
        start_day       TEXT COLLATE "C" NOT NULL,
        end_day         TEXT COLLATE "C" NOT NULL,
        state           TEXT NOT NULL,
        status          TEXT,
        created_ms      BIGINT NOT NULL,
        updated_ms      BIGINT NOT NULL,
        rows            BIGINT,
        note            TEXT,
        PRIMARY KEY (account, run_id)
    );
    CREATE INDEX report_runs_by_state ON report_runs (account, state);
    "#,
    // 4: access-review campaigns, as SQLite's (see its migrations): a frozen population of
    // items, decisions appended (never updated), a closure; every row a link of the campaign's
    // own chain (`chain_heads.chain = 'reviews'`, account `review-<id>`). `review_links` gives
    // each row its position and canonical bytes, for the writer and `verify`: the same text as
    // SQLite's `json_array` of the same columns (no spaces; strings escaped as SQLite, serde and
    // PostgreSQL's `to_json` all escape them: `\"`, `\\`, `\b \t \n \f \r`, other controls as
    // `\u00xx`; flags as 0/1), so a campaign copied between the backends verifies on both.
    r#"
    CREATE TABLE review_campaigns (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name            TEXT NOT NULL,
        scope           TEXT NOT NULL,
        accounts        TEXT NOT NULL,
        reviewers       TEXT NOT NULL,
        due_day         TEXT COLLATE "C",
        started_ms      BIGINT NOT NULL,
        items           BIGINT NOT NULL,
        population_sha256 TEXT NOT NULL,
        chain_heads     TEXT NOT NULL,
        chain_n         BIGINT,
        chain_hash      BYTEA
    );
    CREATE TABLE review_items (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        campaign_id     BIGINT NOT NULL REFERENCES review_campaigns (id),
        item_no         BIGINT NOT NULL,
        account         TEXT COLLATE "C" NOT NULL,
        user_id         TEXT COLLATE "C" NOT NULL,
        user_name       TEXT,
        email           TEXT,
        user_type       TEXT,
        status          TEXT NOT NULL,
        role            TEXT COLLATE "C" NOT NULL,
        privileged      BOOLEAN NOT NULL,
        last_activity_ms BIGINT,
        activity_source TEXT,
        dormant         BOOLEAN NOT NULL,
        granted         TEXT NOT NULL,
        granted_ms      BIGINT,
        granted_by_id   TEXT,
        granted_by_name TEXT,
        granted_by_email TEXT,
        grant_event_id  TEXT,
        grant_ip        TEXT,
        chain_n         BIGINT,
        chain_hash      BYTEA,
        UNIQUE (campaign_id, item_no)
    );
    CREATE TABLE review_decisions (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        campaign_id     BIGINT NOT NULL REFERENCES review_campaigns (id),
        item_no         BIGINT NOT NULL,
        decision        TEXT NOT NULL,
        justification   TEXT NOT NULL,
        reviewer        TEXT NOT NULL,
        decided_ms      BIGINT NOT NULL,
        source_file     TEXT NOT NULL,
        source_sha256   TEXT NOT NULL,
        chain_n         BIGINT,
        chain_hash      BYTEA
    );
    CREATE INDEX review_decisions_by_item ON review_decisions (campaign_id, item_no, seq);
    CREATE TABLE review_closures (
        campaign_id     BIGINT PRIMARY KEY REFERENCES review_campaigns (id),
        closed_ms       BIGINT NOT NULL,
        decided         BIGINT NOT NULL,
        total           BIGINT NOT NULL,
        chain_n         BIGINT,
        chain_hash      BYTEA
    );
    CREATE FUNCTION auditwarden_json(v TEXT) RETURNS TEXT LANGUAGE SQL STABLE
        RETURN COALESCE(to_json(v)::text, 'null');
    CREATE FUNCTION auditwarden_json(v BIGINT) RETURNS TEXT LANGUAGE SQL STABLE
        RETURN COALESCE(v::text, 'null');
    CREATE VIEW review_links AS
        SELECT 'campaign'::text COLLATE "C" AS tbl, id AS seq, 'review-' || id AS account,
            chain_n, chain_hash,
            '["campaign",' || concat_ws(',', id::text, auditwarden_json(name),
                auditwarden_json(scope), auditwarden_json(accounts), auditwarden_json(reviewers),
                auditwarden_json(due_day::text), started_ms::text, items::text,
                auditwarden_json(population_sha256), auditwarden_json(chain_heads)) || ']'
                AS canonical,
            'campaign ' || id AS key
        FROM review_campaigns
        UNION ALL
        SELECT 'item', seq, 'review-' || campaign_id, chain_n, chain_hash,
            '["item",' || concat_ws(',', campaign_id::text, item_no::text,
                auditwarden_json(account::text), auditwarden_json(user_id::text),
                auditwarden_json(user_name), auditwarden_json(email), auditwarden_json(user_type),
                auditwarden_json(status), auditwarden_json(role::text),
                (CASE WHEN privileged THEN '1' ELSE '0' END), auditwarden_json(last_activity_ms),
                auditwarden_json(activity_source), (CASE WHEN dormant THEN '1' ELSE '0' END),
                auditwarden_json(granted), auditwarden_json(granted_ms),
                auditwarden_json(granted_by_id), auditwarden_json(granted_by_name),
                auditwarden_json(granted_by_email), auditwarden_json(grant_event_id),
                auditwarden_json(grant_ip)) || ']',
            'item ' || item_no || ' (' || account || ' ' || user_id || ' ' || role || ')'
        FROM review_items
        UNION ALL
        SELECT 'decision', seq, 'review-' || campaign_id, chain_n, chain_hash,
            '["decision",' || concat_ws(',', campaign_id::text, item_no::text,
                auditwarden_json(decision), auditwarden_json(justification),
                auditwarden_json(reviewer), decided_ms::text, auditwarden_json(source_file),
                auditwarden_json(source_sha256)) || ']',
            'decision on item ' || item_no || ' by ' || reviewer
        FROM review_decisions
        UNION ALL
        SELECT 'closure', campaign_id, 'review-' || campaign_id, chain_n, chain_hash,
            '["closure",' || concat_ws(',', campaign_id::text, closed_ms::text, decided::text,
                total::text) || ']',
            'closure of campaign ' || campaign_id
        FROM review_closures;
    "#,
    // 5: scheduled ticks claimed, as SQLite's job_ticks: the primary key lets one daemon's
    // insert of (job, tick) win, so the report set runs once per tick across the daemons.
    r#"
    CREATE TABLE job_ticks (
        job             TEXT COLLATE "C" NOT NULL,
        tick_ms         BIGINT NOT NULL,
        node            TEXT NOT NULL,
        claimed_ms      BIGINT NOT NULL,
        PRIMARY KEY (job, tick_ms)
    );
    "#,
    // 6: the failed sign-ins the `failed-sign-ins` rule reads after every pass (the last 8 days
    // of failed logins), as SQLite's `events_failed_sign_ins`: partial, so only failed logins
    // cost anything to maintain, and covering, so a pass reads the failures, not 8 days of rows.
    r#"
    CREATE INDEX events_failed_sign_ins ON events (account, ts_ms)
        INCLUDE (event_id, actor_id, actor_name, ip_address)
        WHERE action = 'login' AND status = 'failure';
    "#,
    // 7: see [`EVENT_KEYS`].
    EVENT_KEYS,
];

/// The migration that deduplicates events by an integer key, as SQLite's `EVENT_KEYS` (issue
/// 13): `event_key` is [`crate::store::event_key`] of the id, the same function as SQLite's, so
/// `store copy` between the backends keeps keys equal. The text `UNIQUE (account, event_id)`
/// index over random ids was the costliest of the page insert (its text comparisons were a third
/// of the server's CPU in a backfill); the key is not unique (two ids may share one), and the
/// writer inserts only the events whose key, account and id no row has, looked up under the
/// account's `write_locks` row (see `Batch::write_page`), which is what the constraint did.
/// `events_by_seq` goes too: only the role-event and credential scans read an account by `seq`,
/// and they read few rows, which the two partial indexes hold (as SQLite's).
/// `Postgres::migrate` then fills `event_key` of the rows already stored, from Rust, in chunks,
/// in the same transaction, and runs [`EVENT_KEYS_INDEX`] (an index built once, after the fill,
/// costs less than one maintained through it).
pub const EVENT_KEYS: &str = r#"
    ALTER TABLE events ADD COLUMN event_key BIGINT;
    ALTER TABLE events DROP CONSTRAINT events_account_event_id_key;
    DROP INDEX events_by_seq;
    CREATE INDEX events_credentials ON events (account, seq)
        WHERE resource_type IN ('api_token', 'client_auth_certificate');
    CREATE INDEX events_user_changes ON events (account, seq)
        WHERE resource_type IN ('user', 'service_user') AND action IN ('create', 'update');
"#;

/// Run by `Postgres::migrate` after [`EVENT_KEYS`] has keyed the stored rows: the dedup lookup's
/// index (key only: the account and id are compared on the row).
pub const EVENT_KEYS_INDEX: &str = "CREATE INDEX events_by_key ON events (event_key)";
