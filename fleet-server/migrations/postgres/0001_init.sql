-- edgefleet fleet server schema (PostgreSQL). Times are unix milliseconds.
CREATE TABLE models (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL
);

CREATE TABLE model_versions (
    id BIGSERIAL PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models (id),
    version TEXT NOT NULL,
    stage TEXT NOT NULL,
    package BYTEA NOT NULL,
    package_sha256 TEXT NOT NULL,
    package_len BIGINT NOT NULL,
    arena_bytes BIGINT NOT NULL,
    model_card TEXT NOT NULL,
    profile_sha256 TEXT NOT NULL,
    offline_manifest BYTEA,
    created_ms BIGINT NOT NULL,
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_sha ON model_versions (package_sha256);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    hardware_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    downlink_key TEXT NOT NULL,
    agent_version TEXT NOT NULL DEFAULT '',
    runtime_version TEXT NOT NULL DEFAULT '',
    memory_bytes BIGINT NOT NULL DEFAULT 0,
    live_model TEXT,
    live_version TEXT,
    live_sha256 TEXT,
    live_counter BIGINT NOT NULL DEFAULT 0,
    last_seen_ms BIGINT NOT NULL DEFAULT 0,
    -- The signed manifest this device should hold (republished on every hello:
    -- an embedded broker forgets retained messages when it restarts).
    desired_manifest BYTEA,
    created_ms BIGINT NOT NULL
);

CREATE TABLE device_groups (
    device_id TEXT NOT NULL REFERENCES devices (id),
    group_name TEXT NOT NULL,
    PRIMARY KEY (device_id, group_name)
);

-- Every uplink once (idempotent by device and sequence number).
CREATE TABLE uplinks (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (device_id, seq)
);

-- Telemetry windows, the columns rollout gates and charts read.
CREATE TABLE telemetry (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    package_sha256 TEXT NOT NULL,
    inferences BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    latency_p95_us BIGINT NOT NULL,
    drift_psi DOUBLE PRECISION,
    shadow_agreement DOUBLE PRECISION,
    shadow_inferences BIGINT NOT NULL DEFAULT 0,
    body BYTEA NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX telemetry_sha_time ON telemetry (package_sha256, window_end_ms);

CREATE TABLE device_events (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    package_sha256 TEXT,
    detail TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX device_events_time ON device_events (time_ms);

CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    version_id BIGINT NOT NULL,
    previous_version_id BIGINT,
    target_kind TEXT NOT NULL,
    target_value TEXT NOT NULL,
    waves TEXT NOT NULL,
    gates TEXT NOT NULL,
    on_failure TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    -- Latest gate evaluation (JSON), shown by the API and the dashboard.
    status TEXT NOT NULL DEFAULT '{}',
    manifest BYTEA,
    rollback_manifest BYTEA,
    wave BIGINT NOT NULL,
    wave_started_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE rollout_members (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    device_id TEXT NOT NULL,
    wave BIGINT NOT NULL,
    counter BIGINT NOT NULL,
    status TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);

CREATE TABLE decisions (
    id BIGSERIAL PRIMARY KEY,
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('release', 0);

CREATE TABLE api_tokens (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE drift_alerts (
    model_id TEXT NOT NULL,
    version TEXT NOT NULL,
    over_since_ms BIGINT NOT NULL,
    fired_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model_id, version)
);
