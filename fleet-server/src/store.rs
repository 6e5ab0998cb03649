//! Persistence: one implementation over sqlx's `Any` driver for SQLite (the
//! zero-setup default) and PostgreSQL (scale-out), with migrations per
//! backend (`migrations/{sqlite,postgres}`). Queries use only what both
//! dialects share (`$n` placeholders in order, `ON CONFLICT`, `RETURNING`,
//! 64-bit integers, text and bytes); times are unix milliseconds.
//!
//! Several server replicas may share one PostgreSQL: a rollout is only
//! advanced by the replica holding its lease ([`Store::take_lease`], a
//! conditional `UPDATE` either backend applies atomically), so no rollout is
//! ever driven twice.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use thiserror::Error;

/// Storage errors; `NotFound` and `Conflict` map to 404 and 409.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique key is taken.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON or binary column did not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A model version row.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    /// Id.
    pub id: i64,
    /// Model.
    pub model_id: String,
    /// Version.
    pub version: String,
    /// Stage.
    pub stage: String,
    /// Package SHA-256 (hex).
    pub package_sha256: String,
    /// Package length.
    pub package_len: i64,
    /// Arena bytes.
    pub arena_bytes: i64,
    /// Model card (JSON text).
    pub model_card: String,
    /// Reference profile SHA-256 (hex; zeros if none).
    pub profile_sha256: String,
    /// A manifest signed offline, distributed as is.
    pub offline_manifest: Option<Vec<u8>>,
    /// Created.
    pub created_ms: i64,
}

/// A device row (without secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    /// Id.
    pub id: String,
    /// Platform.
    pub platform: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Runtime version.
    pub runtime_version: String,
    /// Memory.
    pub memory_bytes: i64,
    /// Live model id.
    pub live_model: Option<String>,
    /// Live version.
    pub live_version: Option<String>,
    /// Live package SHA-256 (hex).
    pub live_sha256: Option<String>,
    /// Live release counter.
    pub live_counter: i64,
    /// Last uplink.
    pub last_seen_ms: i64,
    /// Enrolled.
    pub created_ms: i64,
    /// Groups.
    pub groups: Vec<String>,
}

/// What the server needs to talk to a device securely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKeys {
    /// ed25519 public key (hex).
    pub public_key: String,
    /// SHA-256 of the MQTT password (hex).
    pub secret_sha256: String,
    /// Downlink sealing key (hex).
    pub downlink_key: String,
    /// Hardware id (manifests name it).
    pub hardware_id: String,
}

/// A new telemetry window.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryRow {
    /// Device.
    pub device_id: String,
    /// Sequence number.
    pub seq: i64,
    /// Window end.
    pub window_end_ms: i64,
    /// Live package (hex).
    pub package_sha256: String,
    /// Inferences.
    pub inferences: i64,
    /// Errors.
    pub errors: i64,
    /// p95 latency.
    pub latency_p95_us: i64,
    /// Drift PSI, if scored.
    pub drift_psi: Option<f64>,
    /// Shadow agreement, if a candidate ran.
    pub shadow_agreement: Option<f64>,
    /// Shadow inferences.
    pub shadow_inferences: i64,
    /// The whole window (postcard `Telemetry`).
    pub body: Vec<u8>,
}

/// A rollout row.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRow {
    /// Id.
    pub id: String,
    /// Model.
    pub model_id: String,
    /// Target version.
    pub version_id: i64,
    /// The version devices run before (control, rollback target).
    pub previous_version_id: Option<i64>,
    /// `group` or `hardware`.
    pub target_kind: String,
    /// Group name or hardware id.
    pub target_value: String,
    /// Wave percentages (JSON).
    pub waves: String,
    /// Gates (JSON).
    pub gates: String,
    /// `pause` or `rollback`.
    pub on_failure: String,
    /// `live` or `shadow`.
    pub mode: String,
    /// State.
    pub state: String,
    /// Latest gate evaluation (JSON).
    pub status: String,
    /// Current wave index.
    pub wave: i64,
    /// When the current wave started (0: not started).
    pub wave_started_ms: i64,
    /// Created.
    pub created_ms: i64,
    /// Updated.
    pub updated_ms: i64,
}

/// A rollout member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    /// Device.
    pub device_id: String,
    /// Wave it joined in.
    pub wave: i64,
    /// Release counter of its manifest.
    pub counter: i64,
    /// `pending`, `installed`, `failed`, `rolled_back`.
    pub status: String,
    /// Updated.
    pub updated_ms: i64,
}

/// A rollout decision.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    /// Id.
    pub id: i64,
    /// Time.
    pub time_ms: i64,
    /// Kind.
    pub kind: String,
    /// Why.
    pub reason: String,
    /// Metrics at the time (JSON).
    pub metrics: String,
}

/// A device event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// Device.
    pub device_id: String,
    /// Sequence number.
    pub seq: i64,
    /// Time.
    pub time_ms: i64,
    /// Kind.
    pub kind: String,
    /// Package involved (hex).
    pub package_sha256: Option<String>,
    /// Detail (JSON).
    pub detail: String,
}

/// One telemetry uplink for [`Store::insert_telemetry_batch`].
#[derive(Clone, Debug)]
pub struct TelemetryUplink<'a> {
    /// The window (its device id and sequence number are the uplink's).
    pub row: TelemetryRow,
    /// The uplink's time, device clock.
    pub time_ms: i64,
    /// The signed uplink as received.
    pub signed: &'a [u8],
    /// The live model it names.
    pub live: Option<LiveModel>,
}

/// A live model as devices report it: (model, version, sha256 hex, release
/// counter).
pub type LiveModel = (String, String, String, i64);

/// `($first, ...), (...), ...`: `rows` tuples of `cols` numbered
/// placeholders.
fn placeholders(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(first + r * cols + c).to_string());
        }
        s.push(')');
    }
    s
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database URL as connected (for [`Store::second_pool`]).
    url: DbUrl,
    /// Enrolled devices' keys, which never change once written (enrolling
    /// an id twice is refused and nothing deletes a device): every uplink,
    /// acknowledgement and chunk request needs them, so a lookup that found
    /// a device is kept (misses are not: the device may enroll next).
    keys: Arc<RwLock<HashMap<String, DeviceKeys>>>,
}

/// Devices whose keys [`Store::device_keys`] keeps in memory (~300 bytes
/// each); past this the cache starts over.
const KEY_CACHE: usize = 1_000_000;

fn version_row(r: &AnyRow) -> std::result::Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        version: r.try_get("version")?,
        stage: r.try_get("stage")?,
        package_sha256: r.try_get("package_sha256")?,
        package_len: r.try_get("package_len")?,
        arena_bytes: r.try_get("arena_bytes")?,
        model_card: r.try_get("model_card")?,
        profile_sha256: r.try_get("profile_sha256")?,
        offline_manifest: r.try_get("offline_manifest")?,
        created_ms: r.try_get("created_ms")?,
    })
}

const VERSION_COLS: &str = "id, model_id, version, stage, package_sha256, package_len, arena_bytes, model_card, \
     profile_sha256, offline_manifest, created_ms";

const DEVICE_COLS: &str = "id, platform, hardware_id, agent_version, runtime_version, memory_bytes, live_model, \
     live_version, live_sha256, live_counter, last_seen_ms, created_ms";

fn device_row(r: &AnyRow) -> std::result::Result<DeviceRow, sqlx::Error> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        platform: r.try_get("platform")?,
        hardware_id: r.try_get("hardware_id")?,
        agent_version: r.try_get("agent_version")?,
        runtime_version: r.try_get("runtime_version")?,
        memory_bytes: r.try_get("memory_bytes")?,
        live_model: r.try_get("live_model")?,
        live_version: r.try_get("live_version")?,
        live_sha256: r.try_get("live_sha256")?,
        live_counter: r.try_get("live_counter")?,
        last_seen_ms: r.try_get("last_seen_ms")?,
        created_ms: r.try_get("created_ms")?,
        groups: Vec::new(),
    })
}

const ROLLOUT_COLS: &str = "id, model_id, version_id, previous_version_id, target_kind, target_value, waves, gates, \
     on_failure, mode, state, status, wave, wave_started_ms, created_ms, updated_ms";

fn rollout_row(r: &AnyRow) -> std::result::Result<RolloutRow, sqlx::Error> {
    Ok(RolloutRow {
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        version_id: r.try_get("version_id")?,
        previous_version_id: r.try_get("previous_version_id")?,
        target_kind: r.try_get("target_kind")?,
        target_value: r.try_get("target_value")?,
        waves: r.try_get("waves")?,
        gates: r.try_get("gates")?,
        on_failure: r.try_get("on_failure")?,
        mode: r.try_get("mode")?,
        state: r.try_get("state")?,
        status: r.try_get("status")?,
        wave: r.try_get("wave")?,
        wave_started_ms: r.try_get("wave_started_ms")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || d.message().contains("UNIQUE") || d.message().contains("duplicate key")
        }
        _ => false,
    }
}

/// A database URL, kept out of debug output (it may hold a password).
#[derive(Clone)]
struct DbUrl(Arc<str>);

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbUrl(..)")
    }
}

/// A connection pool on `url` (SQLite: WAL, mmap, foreign keys).
async fn open_pool(url: &str, backend: Backend, connections: u32) -> Result<AnyPool> {
    let mut opts = AnyPoolOptions::new().max_connections(connections);
    if backend == Backend::Sqlite {
        opts = opts.after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                // WAL: readers never block the writer; busy_timeout: writers queue.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                // Read pages through a mapping: in WAL mode every write
                // by another connection empties this one's page cache,
                // and re-reading through read(2) was most of ingest's
                // time with thousands of devices.
                conn.execute("PRAGMA mmap_size = 1073741824").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
    }
    Ok(opts.connect(url).await?)
}

impl Store {
    /// Connects and migrates: `sqlite://path` (created if missing) or `postgres://...`.
    ///
    /// # Errors
    /// Bad URL, unreachable database, failed migration.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Conflict(format!(
                "unsupported database URL {url:?}: use sqlite://FILE or postgres://..."
            )));
        };
        let url =
            if backend == Backend::Sqlite && !url.contains('?') { format!("{url}?mode=rwc") } else { url.to_string() };
        let pool = open_pool(&url, backend, if backend == Backend::Sqlite { 8 } else { 16 }).await?;
        let store = Store { pool, backend, url: DbUrl(url.into()), keys: Arc::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// The same database through a pool of its own of `connections`
    /// (sharing the key cache): device ingest uses one, so API calls and
    /// the rollout engine never wait for a connection behind a burst of
    /// telemetry.
    ///
    /// # Errors
    /// The database became unreachable.
    pub async fn second_pool(&self, connections: u32) -> Result<Store> {
        let pool = open_pool(&self.url.0, self.backend, connections).await?;
        Ok(Store { pool, backend: self.backend, url: self.url.clone(), keys: self.keys.clone() })
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    // ---- registry -------------------------------------------------------

    /// Creates the model if it does not exist.
    pub async fn ensure_model(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO models (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a new version; `Conflict` if the version exists.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_version(
        &self,
        model_id: &str,
        version: &str,
        stage: &str,
        package: &[u8],
        package_sha256: &str,
        arena_bytes: i64,
        model_card: &str,
        profile_sha256: &str,
        offline_manifest: Option<&[u8]>,
        now: i64,
    ) -> Result<VersionRow> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO model_versions (model_id, version, stage, package, package_sha256, package_len, arena_bytes, \
             model_card, profile_sha256, offline_manifest, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING {VERSION_COLS}"
        )))
        .bind(model_id)
        .bind(version)
        .bind(stage)
        .bind(package)
        .bind(package_sha256)
        .bind(package.len() as i64)
        .bind(arena_bytes)
        .bind(model_card)
        .bind(profile_sha256)
        .bind(offline_manifest)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Conflict(format!("model {model_id} already has a version {version}"))
            } else {
                e.into()
            }
        })?;
        Ok(version_row(&r)?)
    }

    /// Models with their version counts.
    pub async fn models(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT m.id AS id, (SELECT COUNT(*) FROM model_versions v WHERE v.model_id = m.id) AS n FROM models m ORDER BY m.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("n")?))).collect()
    }

    /// Versions of a model, newest first, after `before_id` (pagination).
    pub async fn versions(&self, model_id: &str, before_id: i64, limit: i64) -> Result<Vec<VersionRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLS} FROM model_versions WHERE model_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        )))
        .bind(model_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(version_row).collect::<std::result::Result<_, _>>()?)
    }

    /// One version.
    pub async fn version(&self, model_id: &str, version: &str) -> Result<VersionRow> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLS} FROM model_versions WHERE model_id = $1 AND version = $2"
        )))
        .bind(model_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("model {model_id} version {version}")))?;
        Ok(version_row(&r)?)
    }

    /// One version by id.
    pub async fn version_by_id(&self, id: i64) -> Result<VersionRow> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {VERSION_COLS} FROM model_versions WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("version id {id}")))?;
        Ok(version_row(&r)?)
    }

    /// The version with this package.
    pub async fn version_by_sha(&self, sha256: &str) -> Result<Option<VersionRow>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLS} FROM model_versions WHERE package_sha256 = $1 LIMIT 1"
        )))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(version_row).transpose()?)
    }

    /// The package bytes of a version.
    pub async fn package(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let r = sqlx::query("SELECT package FROM model_versions WHERE package_sha256 = $1 LIMIT 1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("package")).transpose()?)
    }

    /// Moves a version to a stage.
    pub async fn set_stage(&self, model_id: &str, version: &str, stage: &str) -> Result<()> {
        let n = sqlx::query("UPDATE model_versions SET stage = $1 WHERE model_id = $2 AND version = $3")
            .bind(stage)
            .bind(model_id)
            .bind(version)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("model {model_id} version {version}")));
        }
        Ok(())
    }

    // ---- devices --------------------------------------------------------

    /// Enrolls a device; `Conflict` if the id is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_device(
        &self,
        id: &str,
        platform: &str,
        hardware_id: &str,
        public_key: &str,
        secret_sha256: &str,
        downlink_key: &str,
        groups: &[String],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO devices (id, platform, hardware_id, public_key, secret_sha256, downlink_key, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(platform)
        .bind(hardware_id)
        .bind(public_key)
        .bind(secret_sha256)
        .bind(downlink_key)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Conflict(format!("device {id} is already enrolled"))
            } else {
                e.into()
            }
        })?;
        for g in groups {
            sqlx::query("INSERT INTO device_groups (device_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn groups_of(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT group_name FROM device_groups WHERE device_id = $1 ORDER BY group_name")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("group_name")).collect::<std::result::Result<_, _>>()?)
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<DeviceRow> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("device {id}")))?;
        let mut d = device_row(&r)?;
        d.groups = self.groups_of(id).await?;
        Ok(d)
    }

    /// Devices by id after `after` (pagination), optionally of one group or platform.
    pub async fn devices(
        &self,
        after: &str,
        limit: i64,
        group: Option<&str>,
        platform: Option<&str>,
    ) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS} FROM devices d WHERE id > $1 \
             AND ($2 = '' OR EXISTS (SELECT 1 FROM device_groups g WHERE g.device_id = d.id AND g.group_name = $2)) \
             AND ($3 = '' OR platform = $3) ORDER BY id LIMIT $4"
        )))
        .bind(after)
        .bind(group.unwrap_or(""))
        .bind(platform.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(device_row).collect::<std::result::Result<Vec<_>, _>>()?;
        // Groups of the whole page in one query (ids are in order: a range).
        if let (Some(first), Some(last)) = (out.first().map(|d| d.id.clone()), out.last().map(|d| d.id.clone())) {
            let g = sqlx::query(
                "SELECT device_id, group_name FROM device_groups WHERE device_id >= $1 AND device_id <= $2 \
                 ORDER BY device_id, group_name",
            )
            .bind(&first)
            .bind(&last)
            .fetch_all(&self.pool)
            .await?;
            let mut by: HashMap<String, Vec<String>> = HashMap::new();
            for r in &g {
                by.entry(r.try_get("device_id")?).or_default().push(r.try_get("group_name")?);
            }
            for d in &mut out {
                d.groups = by.remove(&d.id).unwrap_or_default();
            }
        }
        Ok(out)
    }

    /// Replaces a device's groups.
    pub async fn set_groups(&self, id: &str, groups: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("SELECT id FROM devices WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
        if n.is_none() {
            return Err(StoreError::NotFound(format!("device {id}")));
        }
        sqlx::query("DELETE FROM device_groups WHERE device_id = $1").bind(id).execute(&mut *tx).await?;
        for g in groups {
            sqlx::query("INSERT INTO device_groups (device_id, group_name) VALUES ($1, $2)")
                .bind(id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keys and secrets of a device (kept in memory once found: they never
    /// change).
    pub async fn device_keys(&self, id: &str) -> Result<Option<DeviceKeys>> {
        if let Some(k) = self.keys.read().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(Some(k));
        }
        let r = sqlx::query("SELECT public_key, secret_sha256, downlink_key, hardware_id FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let keys = r
            .map(|r| -> std::result::Result<DeviceKeys, sqlx::Error> {
                Ok(DeviceKeys {
                    public_key: r.try_get("public_key")?,
                    secret_sha256: r.try_get("secret_sha256")?,
                    downlink_key: r.try_get("downlink_key")?,
                    hardware_id: r.try_get("hardware_id")?,
                })
            })
            .transpose()?;
        if let (Some(k), Ok(mut c)) = (&keys, self.keys.write()) {
            if c.len() >= KEY_CACHE {
                c.clear();
            }
            c.insert(id.to_string(), k.clone());
        }
        Ok(keys)
    }

    /// Inventory from a device's hello.
    pub async fn update_inventory(&self, id: &str, agent: &str, runtime: &str, memory: i64, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET agent_version = $1, runtime_version = $2, memory_bytes = $3, last_seen_ms = $4 WHERE id = $5",
        )
        .bind(agent)
        .bind(runtime)
        .bind(memory)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What a device says it runs.
    pub async fn set_live(&self, id: &str, model: &str, version: &str, sha256: &str, counter: i64) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET live_model = $1, live_version = $2, live_sha256 = $3, live_counter = $4 WHERE id = $5",
        )
        .bind(model)
        .bind(version)
        .bind(sha256)
        .bind(counter)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Devices a rollout targets: `(id, live sha256, hardware id)`.
    pub async fn target_devices(&self, kind: &str, value: &str) -> Result<Vec<(String, Option<String>, String)>> {
        let q = match kind {
            "group" => {
                "SELECT d.id AS id, d.live_sha256 AS live, d.hardware_id AS hw FROM devices d \
                 JOIN device_groups g ON g.device_id = d.id WHERE g.group_name = $1 ORDER BY d.id"
            }
            _ => "SELECT id, live_sha256 AS live, hardware_id AS hw FROM devices WHERE hardware_id = $1 ORDER BY id",
        };
        let rows = sqlx::query(q).bind(value).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("live")?, r.try_get("hw")?))).collect()
    }

    /// Device counts by platform, and of those seen since `since`.
    pub async fn fleet_by_platform(&self, since: i64) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT platform, COUNT(*) AS n, SUM(CASE WHEN last_seen_ms >= $1 THEN 1 ELSE 0 END) AS online \
             FROM devices GROUP BY platform ORDER BY platform",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("platform")?, r.try_get("n")?, r.try_get::<Option<i64>, _>("online")?.unwrap_or(0))))
            .collect()
    }

    /// Devices per live model version.
    pub async fn fleet_by_version(&self) -> Result<Vec<(String, String, i64)>> {
        // Grouped on the bare columns (the covering index devices_live);
        // no live model reads as "".
        let rows = sqlx::query(
            "SELECT live_model, live_version, COUNT(*) AS n FROM devices \
             GROUP BY live_model, live_version ORDER BY live_model, live_version",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(String, String, i64)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let m: Option<String> = r.try_get("live_model")?;
            let v: Option<String> = r.try_get("live_version")?;
            let n: i64 = r.try_get("n")?;
            let (m, v) = (m.unwrap_or_default(), v.unwrap_or_default());
            // NULL and "" group apart in SQL but read the same here.
            match out.iter_mut().find(|(om, ov, _)| *om == m && *ov == v) {
                Some(e) => e.2 += n,
                None => out.push((m, v, n)),
            }
        }
        out.sort();
        Ok(out)
    }

    // ---- uplinks --------------------------------------------------------

    /// Records an uplink once: `false` if this (device, seq) was seen already.
    pub async fn insert_uplink(
        &self,
        device_id: &str,
        seq: i64,
        time_ms: i64,
        kind: &str,
        body: &[u8],
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO uplinks (device_id, seq, time_ms, kind, body) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (device_id, seq) DO NOTHING",
        )
        .bind(device_id)
        .bind(seq)
        .bind(time_ms)
        .bind(kind)
        .bind(body)
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query("UPDATE devices SET last_seen_ms = $1 WHERE id = $2 AND last_seen_ms < $1")
            .bind(now)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(n == 1)
    }

    /// Stores a run of telemetry uplinks in one transaction with four
    /// statements, whatever its length (instead of four autocommits per
    /// uplink): the uplinks (`RETURNING` the ones that were new), the
    /// devices' `last_seen_ms`, the new ones' telemetry rows, and the live
    /// model each new one names (the last per device). Returns which uplinks
    /// were new (duplicates are acknowledged, not applied again).
    pub async fn insert_telemetry_batch(&self, items: &[TelemetryUplink<'_>], now: i64) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // Safety of the dynamic SQL below: it is built from fixed text and
        // numbered placeholders only; every value is bound.
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO uplinks (device_id, seq, time_ms, kind, body) VALUES {} \
             ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq",
            placeholders(items.len(), 5, 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for it in items {
            q = q.bind(&it.row.device_id).bind(it.row.seq).bind(it.time_ms).bind("telemetry").bind(it.signed);
        }
        let mut inserted = std::collections::HashSet::new();
        for r in q.fetch_all(&mut *tx).await? {
            inserted.insert((r.try_get::<String, _>("device_id")?, r.try_get::<i64, _>("seq")?));
        }
        // The first of a (device, seq) pair repeated within the run is the new one.
        let new: Vec<bool> = items.iter().map(|it| inserted.remove(&(it.row.device_id.clone(), it.row.seq))).collect();

        let mut devices: Vec<&str> = items.iter().map(|it| it.row.device_id.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let sql = format!(
            "UPDATE devices SET last_seen_ms = $1 WHERE last_seen_ms < $1 AND id IN ({})",
            (0..devices.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for d in &devices {
            q = q.bind(*d);
        }
        q.execute(&mut *tx).await?;

        let fresh: Vec<&TelemetryUplink<'_>> = items.iter().zip(&new).filter(|(_, n)| **n).map(|(it, _)| it).collect();
        if !fresh.is_empty() {
            let sql = format!(
                "INSERT INTO telemetry (device_id, seq, window_end_ms, package_sha256, inferences, errors, \
                 latency_p95_us, drift_psi, shadow_agreement, shadow_inferences, body) VALUES {} \
                 ON CONFLICT (device_id, seq) DO NOTHING",
                placeholders(fresh.len(), 11, 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for it in &fresh {
                let t = &it.row;
                q = q
                    .bind(&t.device_id)
                    .bind(t.seq)
                    .bind(t.window_end_ms)
                    .bind(&t.package_sha256)
                    .bind(t.inferences)
                    .bind(t.errors)
                    .bind(t.latency_p95_us)
                    .bind(t.drift_psi)
                    .bind(t.shadow_agreement)
                    .bind(t.shadow_inferences)
                    .bind(&t.body);
            }
            q.execute(&mut *tx).await?;
        }

        // The live model: the last new uplink of each device that names one.
        let mut live: Vec<(&str, &LiveModel)> = Vec::new();
        for it in fresh.iter().rev() {
            if let Some(l) = &it.live
                && !live.iter().any(|(d, _)| *d == it.row.device_id)
            {
                live.push((&it.row.device_id, l));
            }
        }
        if !live.is_empty() {
            // Unnamed VALUES columns are column1.. in both SQLite and PostgreSQL.
            let sql = format!(
                "UPDATE devices SET live_model = v.column2, live_version = v.column3, live_sha256 = v.column4, \
                 live_counter = v.column5 FROM (VALUES {}) AS v WHERE devices.id = v.column1",
                placeholders(live.len(), 5, 1)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (d, (model, version, sha256, counter)) in &live {
                q = q.bind(*d).bind(model).bind(version).bind(sha256).bind(*counter);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Telemetry windows ending in `[from, to]`, of one package or (`None`)
    /// of every package: `(device, package sha256, body)`.
    pub async fn telemetry_between(
        &self,
        sha256: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT device_id, package_sha256, body FROM telemetry WHERE ($1 = '' OR package_sha256 = $1) \
             AND window_end_ms >= $2 AND window_end_ms <= $3 ORDER BY window_end_ms",
        )
        .bind(sha256.unwrap_or(""))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("device_id")?, r.try_get("package_sha256")?, r.try_get("body")?))).collect()
    }

    /// Per-minute latency and drift of a package since `since`: `(minute_ms, inferences, max p95, mean psi)`.
    pub async fn telemetry_series(&self, sha256: &str, since: i64) -> Result<Vec<(i64, i64, i64, Option<f64>)>> {
        let rows = sqlx::query(
            "SELECT (window_end_ms / 60000) * 60000 AS minute, SUM(inferences) AS n, MAX(latency_p95_us) AS p95, \
             AVG(drift_psi) AS psi FROM telemetry WHERE package_sha256 = $1 AND window_end_ms >= $2 \
             GROUP BY (window_end_ms / 60000) * 60000 ORDER BY minute",
        )
        .bind(sha256)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("minute")?, r.try_get("n")?, r.try_get("p95")?, r.try_get("psi")?))).collect()
    }

    /// Stores a device event (idempotent).
    pub async fn insert_event(&self, e: &EventRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_events (device_id, seq, time_ms, kind, package_sha256, detail) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (device_id, seq) DO NOTHING",
        )
        .bind(&e.device_id)
        .bind(e.seq)
        .bind(e.time_ms)
        .bind(&e.kind)
        .bind(&e.package_sha256)
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Recent events, newest first.
    pub async fn recent_events(&self, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT device_id, seq, time_ms, kind, package_sha256, detail FROM device_events ORDER BY time_ms DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    device_id: r.try_get("device_id")?,
                    seq: r.try_get("seq")?,
                    time_ms: r.try_get("time_ms")?,
                    kind: r.try_get("kind")?,
                    package_sha256: r.try_get("package_sha256")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Uplinks stored (all devices).
    pub async fn uplink_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM uplinks").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Uplinks missing between each device's first and last stored
    /// sequence numbers, summed over devices: what was lost on the way
    /// (devices number every uplink, and resend until acknowledged).
    pub async fn uplink_gaps(&self) -> Result<i64> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(mx - mn + 1 - n), 0) AS BIGINT) AS gaps FROM \
             (SELECT MIN(seq) AS mn, MAX(seq) AS mx, COUNT(*) AS n FROM uplinks GROUP BY device_id) t",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("gaps")?)
    }

    // ---- rollouts -------------------------------------------------------

    /// The next release counter (global, strictly increasing).
    pub async fn next_counter(&self) -> Result<i64> {
        let r = sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'release' RETURNING value")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("value")?)
    }

    /// Creates a rollout.
    pub async fn insert_rollout(&self, r: &RolloutRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollouts (id, model_id, version_id, previous_version_id, target_kind, target_value, waves, gates, \
             on_failure, mode, state, status, wave, wave_started_ms, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&r.id)
        .bind(&r.model_id)
        .bind(r.version_id)
        .bind(r.previous_version_id)
        .bind(&r.target_kind)
        .bind(&r.target_value)
        .bind(&r.waves)
        .bind(&r.gates)
        .bind(&r.on_failure)
        .bind(&r.mode)
        .bind(&r.state)
        .bind(&r.status)
        .bind(r.wave)
        .bind(r.wave_started_ms)
        .bind(r.created_ms)
        .bind(r.updated_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("rollout {} exists", r.id)) } else { e.into() })?;
        Ok(())
    }

    /// One rollout.
    pub async fn rollout(&self, id: &str) -> Result<RolloutRow> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rollout {id}")))?;
        Ok(rollout_row(&r)?)
    }

    /// Rollouts, newest first, created before `before` (pagination).
    pub async fn rollouts(&self, before: (i64, &str), limit: i64) -> Result<Vec<RolloutRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE created_ms < $1 OR (created_ms = $1 AND id < $2) \
             ORDER BY created_ms DESC, id DESC LIMIT $3"
        )))
        .bind(before.0)
        .bind(before.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(rollout_row).collect::<std::result::Result<_, _>>()?)
    }

    /// Ids of rollouts in a state.
    pub async fn rollouts_in_state(&self, state: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE state = $1 ORDER BY created_ms")
            .bind(state)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<std::result::Result<_, _>>()?)
    }

    /// Takes (or renews) the lease on a rollout for `owner` until
    /// `now + ttl`; `false` if another live owner holds it.
    pub async fn take_lease(&self, id: &str, owner: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE rollouts SET lease_owner = $1, lease_until_ms = $2 WHERE id = $3 AND (lease_owner = $1 OR lease_until_ms < $4)",
        )
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Updates a rollout's state and wave (only if its state is still `from`).
    pub async fn update_rollout(
        &self,
        id: &str,
        from: &str,
        state: &str,
        wave: i64,
        wave_started_ms: i64,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE rollouts SET state = $1, wave = $2, wave_started_ms = $3, updated_ms = $4 WHERE id = $5 AND state = $6",
        )
        .bind(state)
        .bind(wave)
        .bind(wave_started_ms)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Members of a rollout counted by status.
    pub async fn member_counts(&self, rollout_id: &str) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM rollout_members WHERE rollout_id = $1 GROUP BY status")
                .bind(rollout_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
    }

    /// Adds wave members and sets the manifest they should hold, in one transaction.
    pub async fn add_members(
        &self,
        rollout_id: &str,
        devices: &[&str],
        wave: i64,
        counter: i64,
        manifest: &[u8],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for d in devices {
            sqlx::query(
                "INSERT INTO rollout_members (rollout_id, device_id, wave, counter, status, updated_ms) \
                 VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT (rollout_id, device_id) DO NOTHING",
            )
            .bind(rollout_id)
            .bind(*d)
            .bind(wave)
            .bind(counter)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE devices SET desired_manifest = $1 WHERE id = $2")
                .bind(manifest)
                .bind(*d)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Members of a rollout.
    pub async fn members(&self, rollout_id: &str) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT device_id, wave, counter, status, updated_ms FROM rollout_members WHERE rollout_id = $1 ORDER BY wave, device_id",
        )
        .bind(rollout_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    device_id: r.try_get("device_id")?,
                    wave: r.try_get("wave")?,
                    counter: r.try_get("counter")?,
                    status: r.try_get("status")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    /// Sets a member's status, and its counter if given.
    pub async fn set_member(
        &self,
        rollout_id: &str,
        device_id: &str,
        status: &str,
        counter: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE rollout_members SET status = $1, counter = COALESCE($2, counter), updated_ms = $3 \
             WHERE rollout_id = $4 AND device_id = $5",
        )
        .bind(status)
        .bind(counter)
        .bind(now)
        .bind(rollout_id)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a decision.
    pub async fn add_decision(
        &self,
        rollout_id: &str,
        now: i64,
        kind: &str,
        reason: &str,
        metrics: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO decisions (rollout_id, time_ms, kind, reason, metrics) VALUES ($1, $2, $3, $4, $5)")
            .bind(rollout_id)
            .bind(now)
            .bind(kind)
            .bind(reason)
            .bind(metrics)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Decisions of a rollout, oldest first.
    pub async fn decisions(&self, rollout_id: &str) -> Result<Vec<DecisionRow>> {
        let rows =
            sqlx::query("SELECT id, time_ms, kind, reason, metrics FROM decisions WHERE rollout_id = $1 ORDER BY id")
                .bind(rollout_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRow {
                    id: r.try_get("id")?,
                    time_ms: r.try_get("time_ms")?,
                    kind: r.try_get("kind")?,
                    reason: r.try_get("reason")?,
                    metrics: r.try_get("metrics")?,
                })
            })
            .collect()
    }

    /// Stores the latest gate evaluation of a rollout.
    pub async fn set_rollout_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE rollouts SET status = $1 WHERE id = $2").bind(status).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a rollout's signed manifest (`rollback = false`) or its rollback manifest.
    pub async fn set_rollout_manifest(&self, id: &str, rollback: bool, bytes: &[u8]) -> Result<()> {
        let q = if rollback {
            "UPDATE rollouts SET rollback_manifest = $1 WHERE id = $2"
        } else {
            "UPDATE rollouts SET manifest = $1 WHERE id = $2"
        };
        sqlx::query(q).bind(bytes).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// A rollout's signed manifest, or its rollback manifest.
    pub async fn rollout_manifest(&self, id: &str, rollback: bool) -> Result<Option<Vec<u8>>> {
        let q = if rollback {
            "SELECT rollback_manifest AS m FROM rollouts WHERE id = $1"
        } else {
            "SELECT manifest AS m FROM rollouts WHERE id = $1"
        };
        let r = sqlx::query(q).bind(id).fetch_optional(&self.pool).await?;
        Ok(r.map(|r| r.try_get::<Option<Vec<u8>>, _>("m")).transpose()?.flatten())
    }

    /// Sets the manifest a device should hold.
    pub async fn set_desired(&self, device_id: &str, manifest: &[u8]) -> Result<()> {
        sqlx::query("UPDATE devices SET desired_manifest = $1 WHERE id = $2")
            .bind(manifest)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The manifest a device should hold.
    pub async fn desired(&self, device_id: &str) -> Result<Option<Vec<u8>>> {
        let r = sqlx::query("SELECT desired_manifest AS m FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get::<Option<Vec<u8>>, _>("m")).transpose()?.flatten())
    }

    /// Length of a registered package.
    pub async fn package_len(&self, sha256: &str) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT package_len FROM model_versions WHERE package_sha256 = $1 LIMIT 1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("package_len")).transpose()?)
    }

    /// Running (or rolling back) rollouts a device is a member of, with the member's status.
    pub async fn memberships(&self, device_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT m.rollout_id AS rollout_id, m.status AS status FROM rollout_members m \
             JOIN rollouts r ON r.id = m.rollout_id WHERE m.device_id = $1 AND r.state <> 'completed'",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("rollout_id")?, r.try_get("status")?))).collect()
    }

    /// Every device id (for republishing what each should hold).
    pub async fn device_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM devices ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<std::result::Result<_, _>>()?)
    }

    /// Live versions with telemetry since `since`: `(model, version, package sha256)`.
    pub async fn versions_with_telemetry(&self, since: i64) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT v.model_id AS m, v.version AS v, v.package_sha256 AS sha FROM model_versions v \
             WHERE EXISTS (SELECT 1 FROM telemetry t WHERE t.package_sha256 = v.package_sha256 AND t.window_end_ms >= $1) \
             ORDER BY v.model_id, v.id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("m")?, r.try_get("v")?, r.try_get("sha")?))).collect()
    }

    /// Counts for the metrics: rollouts per state.
    pub async fn rollout_states(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?))).collect()
    }

    // ---- tokens, alerts -------------------------------------------------

    /// Adds an API token (by its SHA-256).
    pub async fn insert_token(&self, sha256: &str, name: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (sha256, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Number of API tokens.
    pub async fn token_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM api_tokens").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Whether an API token (by SHA-256) exists.
    pub async fn token_ok(&self, sha256: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 AS one FROM api_tokens WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Drift alert bookkeeping: `over_since` and `fired`, if the version is over threshold.
    pub async fn drift_alert(&self, model: &str, version: &str) -> Result<Option<(i64, i64)>> {
        let r = sqlx::query("SELECT over_since_ms, fired_ms FROM drift_alerts WHERE model_id = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| -> std::result::Result<(i64, i64), sqlx::Error> {
            Ok((r.try_get("over_since_ms")?, r.try_get("fired_ms")?))
        })
        .transpose()?)
    }

    /// Claims the right to fire a drift alert's webhook (one replica wins).
    pub async fn claim_drift_fire(&self, model: &str, version: &str, now: i64) -> Result<bool> {
        let n =
            sqlx::query("UPDATE drift_alerts SET fired_ms = $1 WHERE model_id = $2 AND version = $3 AND fired_ms = 0")
                .bind(now)
                .bind(model)
                .bind(version)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n == 1)
    }

    /// Sets or clears a drift alert.
    pub async fn set_drift_alert(&self, model: &str, version: &str, state: Option<(i64, i64)>) -> Result<()> {
        match state {
            None => {
                sqlx::query("DELETE FROM drift_alerts WHERE model_id = $1 AND version = $2")
                    .bind(model)
                    .bind(version)
                    .execute(&self.pool)
                    .await?;
            }
            Some((since, fired)) => {
                sqlx::query(
                    "INSERT INTO drift_alerts (model_id, version, over_since_ms, fired_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (model_id, version) DO UPDATE SET over_since_ms = $3, fired_ms = $4",
                )
                .bind(model)
                .bind(version)
                .bind(since)
                .bind(fired)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            other => Err(format!("unknown backend {other}")),
        }
    }
}
