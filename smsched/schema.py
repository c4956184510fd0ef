"""The schema: named, ordered migration steps, the same on every backend.

The steps are written in SQLite's spelling; the PostgreSQL backend reads the same text with its
types (INTEGER PRIMARY KEY -> an identity column, INTEGER -> BIGINT, REAL -> DOUBLE PRECISION).
Every time is stored as UTC Unix seconds (INTEGER for schedules, REAL where sub-second precision
matters: when a message was sent, how long a run took).
"""

# "SMSC": marks a file as ours, so we never migrate somebody else's database.
APPLICATION_ID = 0x534D5343
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tz TEXT NOT NULL,
            region TEXT NOT NULL,
            sender TEXT,
            quiet_hours TEXT NOT NULL DEFAULT '08:00-22:00',
            created_at INTEGER NOT NULL
        );
        CREATE TABLE leads (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            phone TEXT NOT NULL,
            name TEXT,
            fields TEXT NOT NULL DEFAULT '{}',
            tz TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (user_id, phone)
        );
        CREATE TABLE optouts (
            id INTEGER PRIMARY KEY,
            phone TEXT NOT NULL,
            -- 0 for an opt-out that covers every user, else the user's id
            scope INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            source TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (phone, scope)
        );
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            name TEXT NOT NULL,
            channel TEXT NOT NULL,
            priority INTEGER NOT NULL,
            message TEXT,
            template TEXT,
            lang TEXT,
            params TEXT,
            session INTEGER NOT NULL DEFAULT 0,
            tz TEXT NOT NULL,
            quiet_hours TEXT NOT NULL,
            rrule TEXT,
            valid_for INTEGER NOT NULL,
            gsm7 INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',
            scheduled_at INTEGER NOT NULL,
            materialized_until INTEGER,
            encoding TEXT,
            segments_per_message INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            user_id INTEGER NOT NULL,
            lead_id INTEGER,
            phone TEXT NOT NULL,
            channel TEXT NOT NULL,
            body TEXT NOT NULL,
            params TEXT,
            tz TEXT NOT NULL,
            priority INTEGER NOT NULL,
            -- position inside its campaign: claims take seq 0 of every due campaign, then seq 1...
            seq INTEGER NOT NULL,
            occurrence INTEGER NOT NULL,
            scheduled_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            state TEXT NOT NULL,
            lease_until REAL,
            claimed_by TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            sent_at REAL,
            provider TEXT,
            provider_id TEXT,
            error TEXT,
            updated_at REAL
        );
        CREATE INDEX messages_due ON messages (priority, scheduled_at / 60, seq)
            WHERE state = 'scheduled';
        CREATE INDEX messages_campaign ON messages (campaign_id, state);
        CREATE INDEX messages_phone ON messages (phone);
        CREATE INDEX messages_inflight ON messages (state, lease_until)
            WHERE state IN ('claimed', 'sending');
        CREATE INDEX messages_sent ON messages (sent_at) WHERE sent_at IS NOT NULL;
        CREATE INDEX campaigns_user ON campaigns (user_id);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL,
            mode TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            clock_start REAL NOT NULL,
            claimed INTEGER NOT NULL DEFAULT 0,
            sent INTEGER NOT NULL DEFAULT 0,
            retried INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            unknown INTEGER NOT NULL DEFAULT 0,
            suppressed INTEGER NOT NULL DEFAULT 0,
            expired INTEGER NOT NULL DEFAULT 0,
            deferred INTEGER NOT NULL DEFAULT 0,
            duration REAL,
            rate REAL,
            lag_p50 REAL,
            lag_p95 REAL,
            lag_p99 REAL,
            lag_max REAL,
            time_db REAL,
            time_provider REAL,
            time_rate_limit REAL,
            time_idle REAL,
            bottleneck TEXT,
            summary TEXT
        );
        CREATE INDEX runs_started ON runs (started_at);
        """,
    ),
    (
        "0002_next_due_and_run_facts",
        """
        -- When does the next message fall due: one index step, whatever the table's size.
        CREATE INDEX messages_next_due ON messages (scheduled_at) WHERE state = 'scheduled';
        -- A message changes state three times on its way out (claimed, sending, sent): indexes
        -- that hold the state pay for each change. A campaign's messages are found by campaign
        -- alone (a few thousand rows at most), and a run's claims by their lease, which only
        -- claimed and sending messages have.
        DROP INDEX messages_campaign;
        CREATE INDEX messages_campaign ON messages (campaign_id);
        DROP INDEX messages_inflight;
        CREATE INDEX messages_inflight ON messages (lease_until) WHERE lease_until IS NOT NULL;
        -- The facts a run's bottleneck is named from.
        ALTER TABLE runs ADD COLUMN time_cpu REAL;
        ALTER TABLE runs ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN bottleneck_detail TEXT;
        """,
    ),
    (
        "0003_delivery_and_receipts",
        """
        -- When the last request for a message left (wall clock): reconciliation's time window.
        ALTER TABLE messages ADD COLUMN sending_at REAL;
        -- What the provider's delivery receipts said last, by the provider's own order.
        ALTER TABLE messages ADD COLUMN delivery TEXT;
        ALTER TABLE messages ADD COLUMN delivery_at REAL;
        ALTER TABLE messages ADD COLUMN delivered_at REAL;
        ALTER TABLE messages ADD COLUMN delivery_error TEXT;
        CREATE INDEX messages_unknown ON messages (provider, sending_at) WHERE state = 'unknown';
        CREATE INDEX messages_provider_id ON messages (provider_id) WHERE provider_id IS NOT NULL;
        -- Every receipt as it came, once (a replay is ignored); message_id is NULL until it matches.
        CREATE TABLE receipts (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            provider_message_id TEXT NOT NULL,
            message_id INTEGER,
            status TEXT NOT NULL,
            error_code TEXT,
            error_text TEXT,
            occurred_at REAL,
            received_at REAL NOT NULL,
            UNIQUE (provider, provider_message_id, status)
        );
        CREATE INDEX receipts_unmatched ON receipts (provider_message_id) WHERE message_id IS NULL;
        """,
    ),
    (
        "0004_line_types",
        """
        -- libphonenumber's type of each lead's number: an SMS campaign leaves landlines out.
        ALTER TABLE leads ADD COLUMN line_type TEXT;
        ALTER TABLE campaigns ADD COLUMN include_landlines INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "0005_run_owner",
        """
        -- Which dispatcher a run is (the claimed_by of its messages): on a shared database a
        -- run is known dead when its owner no longer holds its lock.
        ALTER TABLE runs ADD COLUMN owner TEXT;
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
