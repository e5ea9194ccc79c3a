//! Devices: provisioning, the facts check-ins report (flushed in batches), listing and the fleet
//! summary.

use super::audit::{insert_audit, AuditEntry};
use super::db::{is_unique_violation, Backend, Store, StoreError};
use super::sql::{binary_chunks, pg_array, pg_array_param, rows_per_statement, Param, Sql, BATCH};
use super::sqlite_writer::positional;
use fota_protocol::messages::{BootState, CheckIn, RdpLevel};
use fota_protocol::{ImageVersion, SlotId};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row as _;
use std::collections::HashMap;

/// A device to provision.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Validated device id.
    pub id: String,
    /// Hardware model.
    pub model: String,
    /// Tags for targeting.
    pub tags: Vec<String>,
    /// SHA-256 of the device's secret token.
    pub token_hash: [u8; 32],
}

/// What a check-in (or a report) tells about a device, buffered and written in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// When the device was last heard from.
    pub last_seen_at: i64,
    /// What the last check-in said; `None` when only a report was heard.
    pub check_in: Option<CheckInFacts>,
}

/// The check-in fields, kept typed (all `Copy`) so the check-in path neither allocates nor
/// formats; the flusher turns them into the stored text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInFacts {
    /// Running firmware version.
    pub firmware_version: ImageVersion,
    /// Slot it runs from.
    pub running_slot: SlotId,
    /// Trial or confirmed.
    pub boot_state: BootState,
    /// Bootloader version.
    pub bootloader_version: ImageVersion,
    /// Read-out protection level.
    pub rdp_level: RdpLevel,
    /// Write-protected sectors (bit i = sector i).
    pub wrp_mask: u32,
    /// The anti-rollback floor its bootloader holds, if the device reports it.
    pub security_counter: Option<u32>,
}

impl CheckInFacts {
    /// What a check-in says.
    pub fn of(c: &CheckIn) -> Self {
        Self {
            firmware_version: c.firmware_version,
            running_slot: c.running_slot,
            boot_state: c.boot_state,
            bootloader_version: c.bootloader_version,
            rdp_level: c.rdp_level,
            wrp_mask: c.wrp_mask,
            security_counter: c.security_counter,
        }
    }
}

/// Stored names: the JSON names of the device protocol.
fn slot_name(s: SlotId) -> &'static str {
    match s {
        SlotId::A => "a",
        SlotId::B => "b",
    }
}

fn boot_state_name(b: BootState) -> &'static str {
    match b {
        BootState::Trial => "trial",
        BootState::Confirmed => "confirmed",
    }
}

fn rdp_name(r: RdpLevel) -> &'static str {
    match r {
        RdpLevel::Level0 => "level0",
        RdpLevel::Level1 => "level1",
        RdpLevel::Level2 => "level2",
    }
}

pub use CheckInFacts as DeviceCheckInFacts;

/// Whether a device is being heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Provisioned, never checked in.
    NeverSeen,
    /// Checked in within two poll intervals.
    Online,
    /// Silent for longer than two poll intervals.
    Silent,
}

/// What the fleet's status filter selects: whether a device is heard from, or whether its flash
/// protection would refuse an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Provisioned, never checked in.
    NeverSeen,
    /// Checked in within two poll intervals.
    Online,
    /// Silent for longer than two poll intervals.
    Silent,
    /// Its write protection (the WRP mask of its last check-in) covers the slot an update would
    /// write (the one it does not run from): every rollout skips it, as the engine does.
    ProtectionBlocked,
}

/// What the fleet's boot-state filter selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootStateFilter {
    /// Its last check-in ran a confirmed image.
    Confirmed,
    /// Its last check-in ran an image on trial (booted, not confirmed yet: pending).
    Trial,
    /// Its bootloader reverted an update (a `rolled_back` report) and it has confirmed no
    /// update since.
    Reverted,
}

/// A device as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    /// Device id.
    pub id: String,
    /// Hardware model.
    pub model: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Provisioned at (Unix ms).
    pub created_at: i64,
    /// Last heard from (Unix ms).
    pub last_seen_at: Option<i64>,
    /// Running firmware version.
    pub firmware_version: Option<String>,
    /// Slot it runs from.
    pub running_slot: Option<String>,
    /// `trial` or `confirmed`.
    pub boot_state: Option<String>,
    /// Bootloader version.
    pub bootloader_version: Option<String>,
    /// RDP level.
    pub rdp_level: Option<String>,
    /// Write-protected sectors.
    pub wrp_mask: Option<i64>,
    /// The anti-rollback floor its bootloader holds, as it last reported it.
    pub security_counter: Option<i64>,
    /// Derived from `last_seen_at`.
    pub status: DeviceStatus,
}

/// Filters for listing devices; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Exact model.
    pub model: Option<String>,
    /// Exact firmware version (as reported).
    pub version: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Id contains this text, ignoring case (a search; `_` is matched literally).
    pub id_contains: Option<String>,
    /// Derived status, or protection-blocked.
    pub status: Option<StatusFilter>,
    /// Boot state.
    pub boot_state: Option<BootStateFilter>,
    /// Last seen at or after (Unix ms).
    pub seen_after: Option<i64>,
    /// Last seen before (Unix ms), or never.
    pub seen_before: Option<i64>,
    /// Page start: ids greater than this.
    pub after: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// Devices per version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionCount {
    /// Firmware version (`null`: never checked in).
    pub version: Option<String>,
    /// How many devices run it.
    pub devices: i64,
}

/// Devices per model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelCount {
    /// Hardware model.
    pub model: String,
    /// How many devices are of it.
    pub devices: i64,
}

/// Fleet counts by model, version, boot state and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetSummary {
    /// All devices.
    pub total: i64,
    /// By model, most common first.
    pub by_model: Vec<ModelCount>,
    /// By firmware version, most common first.
    pub by_version: Vec<VersionCount>,
    /// Last checked in running a confirmed image.
    pub confirmed: i64,
    /// Last checked in running an image on trial.
    pub trial: i64,
    /// Reverted by their bootloader, no update confirmed since (`boot_state=reverted`).
    pub reverted: i64,
    /// Write protection covers the slot an update would write (`status=protection_blocked`).
    pub protection_blocked: i64,
    /// Never checked in.
    pub never_seen: i64,
    /// Heard from within two poll intervals.
    pub online: i64,
    /// Not heard from for longer.
    pub silent: i64,
}

fn status_of(last_seen_at: Option<i64>, stale_before: i64) -> DeviceStatus {
    match last_seen_at {
        None => DeviceStatus::NeverSeen,
        Some(t) if t >= stale_before => DeviceStatus::Online,
        Some(_) => DeviceStatus::Silent,
    }
}

/// SQL: the device's write protection covers the slot an update would write (the other one).
fn protection_blocked_sql() -> String {
    use fota_protocol::layout::{SLOT_A, SLOT_B};
    format!(
        "((running_slot = 'a' AND (wrp_mask & {b}) <> 0) OR (running_slot = 'b' AND (wrp_mask & {a}) <> 0))",
        a = SLOT_A.sector_mask(),
        b = SLOT_B.sector_mask(),
    )
}

/// SQL: the bootloader reverted the device's last update; no confirmation reported since (the
/// device's last `confirmed` event, if any, has a lower event id than the revert's). The
/// confirmation is a scalar subquery, one probe per reverted device (on SQLite through
/// `device_events`' primary key, on PostgreSQL through its partial index of `confirmed`
/// events): written as `NOT EXISTS`, PostgreSQL without statistics hashed every `confirmed`
/// event of the fleet instead (284 ms at 100,000 devices, 53 ms this way).
const REVERTED_SQL: &str = "EXISTS (SELECT 1 FROM device_events r WHERE r.device_id = devices.id \
     AND r.kind = 'rolled_back' AND COALESCE((SELECT MAX(c.event_id) FROM device_events c \
     WHERE c.device_id = r.device_id AND c.kind = 'confirmed'), -1) < r.event_id)";

const DEVICE_COLUMNS: &str = "id, model, created_at, last_seen_at, firmware_version, \
     running_slot, boot_state, bootloader_version, rdp_level, wrp_mask, security_counter";

fn device_from_row(row: &AnyRow, stale_before: i64) -> Result<DeviceRecord, sqlx::Error> {
    let last_seen_at: Option<i64> = row.try_get("last_seen_at")?;
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        model: row.try_get("model")?,
        tags: Vec::new(),
        created_at: row.try_get("created_at")?,
        last_seen_at,
        firmware_version: row.try_get("firmware_version")?,
        running_slot: row.try_get("running_slot")?,
        boot_state: row.try_get("boot_state")?,
        bootloader_version: row.try_get("bootloader_version")?,
        rdp_level: row.try_get("rdp_level")?,
        wrp_mask: row.try_get("wrp_mask")?,
        security_counter: row.try_get("security_counter")?,
        status: status_of(last_seen_at, stale_before),
    })
}

impl Store {
    /// Provision devices in one transaction, with its `devices.register` audit entry by `actor`:
    /// all or none. An id that exists already fails the whole batch with
    /// [`StoreError::AlreadyExists`] naming it.
    pub async fn register_devices(
        &self,
        devices: &[NewDevice],
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool()?.begin().await?;
        for chunk in devices.chunks(rows_per_statement(self.backend(), 4, BATCH)) {
            let mut sql = Sql::default();
            sql.push("INSERT INTO devices (id, model, token_hash, created_at) VALUES ");
            for (i, d) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(Param::Text(d.id.clone()))
                    .push(", ")
                    .bind(Param::Text(d.model.clone()))
                    .push(", ")
                    .bind(Param::Bytes(d.token_hash.to_vec()))
                    .push(", ")
                    .bind(Param::Int(now))
                    .push(")");
            }
            if let Err(e) = sql.query().execute(&mut *tx).await {
                if is_unique_violation(&e) {
                    let existing = self.first_existing(chunk).await?;
                    return Err(StoreError::AlreadyExists(format!("device {existing}")));
                }
                return Err(e.into());
            }
        }
        let tags: Vec<(&str, &str)> = devices
            .iter()
            .flat_map(|d| d.tags.iter().map(move |t| (d.id.as_str(), t.as_str())))
            .collect();
        for chunk in tags.chunks(rows_per_statement(self.backend(), 2, BATCH)) {
            let mut sql = Sql::default();
            sql.push("INSERT INTO device_tags (device_id, tag) VALUES ");
            for (i, (id, tag)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(Param::Text((*id).to_string()))
                    .push(", ")
                    .bind(Param::Text((*tag).to_string()))
                    .push(")");
            }
            sql.push(" ON CONFLICT DO NOTHING");
            sql.query().execute(&mut *tx).await?;
        }
        insert_audit(
            &mut tx,
            &AuditEntry::devices_registered(actor, devices, now),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The devices revoked at or after `since` (Unix ms): what each replica reads every second
    /// to drop their cached credentials (from the partial index `devices_revoked`).
    pub async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM devices WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(self.reader()?)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// Revoke device `id`: its token stops authenticating; with its `device.revoke` audit entry
    /// by `actor`. `Ok(false)`: it was revoked already. `NotFound`: no such device.
    pub async fn revoke_device(&self, id: &str, actor: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        let changed =
            sqlx::query("UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            let exists = sqlx::query("SELECT 1 AS one FROM devices WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return if exists {
                Ok(false)
            } else {
                Err(StoreError::NotFound(format!("device {id}")))
            };
        }
        insert_audit(
            &mut tx,
            &AuditEntry::new(
                actor,
                "device.revoke",
                None,
                None,
                serde_json::json!({ "device": id }),
                now,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn first_existing(&self, chunk: &[NewDevice]) -> Result<String, StoreError> {
        for d in chunk {
            if self.device(&d.id, 0).await?.is_some() {
                return Ok(d.id.clone());
            }
        }
        // A duplicate inside the batch itself.
        let mut seen = std::collections::HashSet::new();
        Ok(chunk
            .iter()
            .find(|d| !seen.insert(d.id.as_str()))
            .map_or_else(|| "id".to_string(), |d| d.id.clone()))
    }

    /// The token hash, model and tags of a device, for authenticating its requests and matching
    /// it against rollout selectors.
    pub async fn device_credentials(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, String, Vec<String>)>, StoreError> {
        // One round trip: the device row once per tag (or once with a NULL tag).
        let rows = sqlx::query(
            "SELECT d.token_hash, d.model, t.tag FROM devices d \
             LEFT JOIN device_tags t ON t.device_id = d.id \
             WHERE d.id = $1 AND d.revoked_at IS NULL ORDER BY t.tag",
        )
        .bind(id)
        .fetch_all(self.reader()?)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let tags = rows
            .iter()
            .filter_map(|r| r.try_get::<Option<String>, _>("tag").transpose())
            .collect::<Result<_, _>>()?;
        Ok(Some((
            first.try_get("token_hash")?,
            first.try_get("model")?,
            tags,
        )))
    }

    /// Write buffered facts: one multi-row UPDATE per batch, in one transaction. A fact older than
    /// what is stored (another replica flushed later news) is skipped.
    pub async fn flush_device_facts(
        &self,
        facts: &[(String, DeviceFacts)],
    ) -> Result<(), StoreError> {
        if facts.is_empty() {
            return Ok(());
        }
        if self.backend() == Backend::Sqlite {
            let rows: Vec<([Param; FACT_COLUMNS], bool)> = facts
                .iter()
                .map(|(id, f)| (fact_values(id, f), f.check_in.is_some()))
                .collect();
            let on_sqlite = self.on_sqlite_writer(move |conn| flush_facts_sqlite(conn, &rows));
            if let Some(result) = on_sqlite.await {
                return result;
            }
        }
        // PostgreSQL: one statement, a parameter a column, whatever the number of devices.
        let rows: Vec<[Param; FACT_COLUMNS]> =
            facts.iter().map(|(id, f)| fact_values(id, f)).collect();
        let text = facts_update_pg_sql();
        let mut q = sqlx::query(&text);
        for column in 0..FACT_COLUMNS {
            q = q.bind(pg_array(rows.iter().map(|row| param_text(&row[column]))));
        }
        q.execute(self.pool()?).await?;
        Ok(())
    }

    /// One device, with its tags. `stale_before` (Unix ms) decides online vs silent.
    pub async fn device(
        &self,
        id: &str,
        stale_before: i64,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reader()?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut device = device_from_row(&row, stale_before)?;
        device.tags = sqlx::query("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag")
            .bind(id)
            .fetch_all(self.reader()?)
            .await?
            .iter()
            .map(|r| r.try_get("tag"))
            .collect::<Result<_, _>>()?;
        Ok(Some(device))
    }

    /// A page of devices matching `filter`, ordered by id.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        stale_before: i64,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE 1 = 1"));
        if let Some(model) = &filter.model {
            sql.push(" AND model = ").bind(Param::Text(model.clone()));
        }
        if let Some(version) = &filter.version {
            sql.push(" AND firmware_version = ")
                .bind(Param::Text(version.clone()));
        }
        if let Some(tag) = &filter.tag {
            sql.push(" AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = devices.id AND t.tag = ")
                .bind(Param::Text(tag.clone()))
                .push(")");
        }
        if let Some(text) = &filter.id_contains {
            // LIKE's wildcards are literal here; both backends compare lowercased text alike.
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            sql.push(" AND LOWER(id) LIKE ")
                .bind(Param::Text(format!("%{escaped}%")))
                .push(" ESCAPE '\\'");
        }
        match filter.status {
            None => {}
            Some(StatusFilter::NeverSeen) => {
                sql.push(" AND last_seen_at IS NULL");
            }
            Some(StatusFilter::Online) => {
                sql.push(" AND last_seen_at >= ")
                    .bind(Param::Int(stale_before));
            }
            Some(StatusFilter::Silent) => {
                sql.push(" AND last_seen_at < ")
                    .bind(Param::Int(stale_before));
            }
            Some(StatusFilter::ProtectionBlocked) => {
                sql.push(&format!(" AND {}", protection_blocked_sql()));
            }
        }
        match filter.boot_state {
            None => {}
            Some(BootStateFilter::Confirmed) => {
                sql.push(" AND boot_state = 'confirmed'");
            }
            Some(BootStateFilter::Trial) => {
                sql.push(" AND boot_state = 'trial'");
            }
            Some(BootStateFilter::Reverted) => {
                sql.push(&format!(" AND {REVERTED_SQL}"));
            }
        }
        if let Some(t) = filter.seen_after {
            sql.push(" AND last_seen_at >= ").bind(Param::Int(t));
        }
        if let Some(t) = filter.seen_before {
            sql.push(" AND (last_seen_at IS NULL OR last_seen_at < ")
                .bind(Param::Int(t))
                .push(")");
        }
        if let Some(after) = &filter.after {
            sql.push(" AND id > ").bind(Param::Text(after.clone()));
        }
        sql.push(" ORDER BY id LIMIT ")
            .bind(Param::Int(i64::from(filter.limit)));
        let rows = sql.query().fetch_all(self.reader()?).await?;
        let mut devices = rows
            .iter()
            .map(|r| device_from_row(r, stale_before))
            .collect::<Result<Vec<_>, _>>()?;
        if devices.is_empty() {
            return Ok(devices);
        }
        let mut tags = Sql::default();
        tags.push("SELECT device_id, tag FROM device_tags WHERE device_id IN (");
        for (i, d) in devices.iter().enumerate() {
            if i > 0 {
                tags.push(", ");
            }
            tags.bind(Param::Text(d.id.clone()));
        }
        tags.push(") ORDER BY device_id, tag");
        let mut by_device: HashMap<String, Vec<String>> = HashMap::new();
        for row in tags.query().fetch_all(self.reader()?).await? {
            by_device
                .entry(row.try_get("device_id")?)
                .or_default()
                .push(row.try_get("tag")?);
        }
        for d in &mut devices {
            d.tags = by_device.remove(&d.id).unwrap_or_default();
        }
        Ok(devices)
    }

    /// Counts by model, version, boot state and status: four grouped reads of the whole fleet,
    /// for a page's visit (not for every search).
    pub async fn fleet_summary(&self, stale_before: i64) -> Result<FleetSummary, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN last_seen_at IS NULL THEN 1 ELSE 0 END), 0) AS never_seen, \
             COALESCE(SUM(CASE WHEN last_seen_at >= $1 THEN 1 ELSE 0 END), 0) AS online, \
             COALESCE(SUM(CASE WHEN boot_state = 'confirmed' THEN 1 ELSE 0 END), 0) AS confirmed, \
             COALESCE(SUM(CASE WHEN boot_state = 'trial' THEN 1 ELSE 0 END), 0) AS trial, \
             COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS protection_blocked \
             FROM devices",
            protection_blocked_sql()
        ))
        .bind(stale_before)
        .fetch_one(self.reader()?)
        .await?;
        let total: i64 = row.try_get("total")?;
        let never_seen: i64 = row.try_get("never_seen")?;
        let online: i64 = row.try_get("online")?;
        // Only the devices that ever reported a revert are looked at.
        let reverted: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM devices WHERE id IN \
             (SELECT device_id FROM device_events WHERE kind = 'rolled_back') AND {REVERTED_SQL}"
        ))
        .fetch_one(self.reader()?)
        .await?
        .try_get("n")?;
        let by_model = sqlx::query(
            "SELECT model, COUNT(*) AS devices FROM devices \
             GROUP BY model ORDER BY devices DESC, model",
        )
        .fetch_all(self.reader()?)
        .await?
        .iter()
        .map(|r| {
            Ok(ModelCount {
                model: r.try_get("model")?,
                devices: r.try_get("devices")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let by_version = sqlx::query(
            "SELECT firmware_version, COUNT(*) AS devices FROM devices \
             GROUP BY firmware_version ORDER BY devices DESC, firmware_version",
        )
        .fetch_all(self.reader()?)
        .await?
        .iter()
        .map(|r| {
            Ok(VersionCount {
                version: r.try_get("firmware_version")?,
                devices: r.try_get("devices")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(FleetSummary {
            total,
            by_model,
            by_version,
            confirmed: row.try_get("confirmed")?,
            trial: row.try_get("trial")?,
            reverted,
            protection_blocked: row.try_get("protection_blocked")?,
            never_seen,
            online,
            silent: total - never_seen - online,
        })
    }
}

/// Columns of a device's facts in [`facts_update_pg_sql`]: id, last seen, and the check-in's
/// firmware version, its sort key, running slot, boot state, bootloader version, RDP level,
/// WRP mask and security counter.
const FACT_COLUMNS: usize = 10;

/// A device's facts as the [`FACT_COLUMNS`] values of its row.
fn fact_values(id: &str, f: &DeviceFacts) -> [Param; FACT_COLUMNS] {
    let c = f.check_in.as_ref();
    [
        Param::Text(id.to_string()),
        Param::Int(f.last_seen_at),
        Param::OptText(c.map(|c| c.firmware_version.to_string())),
        Param::OptInt(c.map(|c| crate::domain::version::version_key(&c.firmware_version))),
        Param::OptText(c.map(|c| slot_name(c.running_slot).to_string())),
        Param::OptText(c.map(|c| boot_state_name(c.boot_state).to_string())),
        Param::OptText(c.map(|c| c.bootloader_version.to_string())),
        Param::OptText(c.map(|c| rdp_name(c.rdp_level).to_string())),
        Param::OptInt(c.map(|c| i64::from(c.wrp_mask))),
        Param::OptInt(c.and_then(|c| c.security_counter).map(i64::from)),
    ]
}

/// `(v1, ..., v_cols), ...`: `n` rows of `cols` placeholders, numbered `$1..` row by row.
fn values_list(n: usize, cols: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        if i > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for c in 0..cols {
            if c > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!("${}", cols * i + c + 1));
        }
        text.push(')');
    }
    text
}

/// The check-in fact columns after id and last seen, in [`fact_values`]' order.
const CHECK_IN_COLUMNS: [&str; FACT_COLUMNS - 2] = [
    "firmware_version",
    "firmware_version_key",
    "running_slot",
    "boot_state",
    "bootloader_version",
    "rdp_level",
    "wrp_mask",
    "security_counter",
];

/// `col = COALESCE(v.columnK, devices.col), ...` for the check-in columns: a fact not heard
/// keeps what is stored.
fn check_in_assignments() -> String {
    CHECK_IN_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = COALESCE(v.column{}, devices.{c})", i + 3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// PostgreSQL: every device's facts in one UPDATE, each column bound as one array
/// ([`pg_array`], in [`fact_values`]' order), unnested into the `v.columnK` the SQLite forms use.
/// Before, a `VALUES` list of 200 devices a statement, 2,000 parameters planned at each run.
fn facts_update_pg_sql() -> String {
    const ELEMENTS: [&str; FACT_COLUMNS] = [
        "text", "bigint", "text", "bigint", "text", "text", "text", "text", "bigint", "bigint",
    ];
    let arrays: Vec<String> = ELEMENTS
        .iter()
        .enumerate()
        .map(|(i, element)| pg_array_param(i + 1, element))
        .collect();
    let names: Vec<String> = (1..=FACT_COLUMNS).map(|k| format!("column{k}")).collect();
    format!(
        "UPDATE devices SET last_seen_at = v.column2, {} FROM unnest({}) AS v({}) \
         WHERE devices.id = v.column1 \
         AND (devices.last_seen_at IS NULL OR devices.last_seen_at <= v.column2)",
        check_in_assignments(),
        arrays.join(", "),
        names.join(", ")
    )
}

/// A fact as the text of an array element ([`pg_array`]): numbers as their digits, `None` NULL.
fn param_text(p: &Param) -> Option<String> {
    match p {
        Param::Int(v) => Some(v.to_string()),
        Param::OptInt(v) => v.map(|v| v.to_string()),
        Param::Text(v) => Some(v.clone()),
        Param::OptText(v) => v.clone(),
        // No fact is bytes.
        Param::Bytes(_) => None,
    }
}

/// SQLite, first of two: `n` devices' last-seen times (`$1..` pairs of id and time), a time
/// older than what is stored skipped. It writes no indexed column, so no index of `devices`.
fn last_seen_update_sql(n: usize) -> String {
    format!(
        "UPDATE devices SET last_seen_at = v.column2 FROM (VALUES {}) AS v \
         WHERE devices.id = v.column1 \
         AND (devices.last_seen_at IS NULL OR devices.last_seen_at <= v.column2)",
        values_list(n, 2)
    )
}

/// SQLite, second of two: the check-in facts of `n` devices (as [`fact_values`] orders
/// them), written only where one differs from what is stored and this check-in is the newest
/// news (its time is the stored one, or older news lost to a newer replica's). Nearly every
/// check-in repeats the facts of the one before, and SQLite rewrites an index whenever its
/// column is assigned, equal or not: this way the version index is rewritten only for a
/// device whose version changed.
fn changed_facts_update_sql(n: usize) -> String {
    let differs = CHECK_IN_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "(v.column{k} IS NOT NULL AND devices.{c} IS NOT v.column{k})",
                k = i + 3
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "UPDATE devices SET {} FROM (VALUES {}) AS v \
         WHERE devices.id = v.column1 AND devices.last_seen_at <= v.column2 AND ({differs})",
        check_in_assignments(),
        values_list(n, FACT_COLUMNS)
    )
}

/// [`Store::flush_device_facts`] on the SQLite writer's connection, bound by position: every
/// device's last-seen time, then the check-in facts that changed ([`changed_facts_update_sql`]),
/// up to 256 devices a statement, in sizes that are powers of two so the connection keeps a
/// few statements prepared.
fn flush_facts_sqlite(
    conn: &mut rusqlite::Connection,
    rows: &[([Param; FACT_COLUMNS], bool)],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for chunk in binary_chunks(rows, 256) {
        let mut st = tx.prepare_cached(&positional(&last_seen_update_sql(chunk.len())))?;
        st.execute(rusqlite::params_from_iter(
            chunk
                .iter()
                .flat_map(|(r, _)| r[..2].iter())
                .map(Param::to_sqlite),
        ))?;
    }
    // Only a check-in's row carries facts beyond the time (a report's is NULL after it).
    let with_facts: Vec<&[Param; FACT_COLUMNS]> = rows
        .iter()
        .filter(|(_, check_in)| *check_in)
        .map(|(r, _)| r)
        .collect();
    for chunk in binary_chunks(&with_facts, 256) {
        let mut st = tx.prepare_cached(&positional(&changed_facts_update_sql(chunk.len())))?;
        st.execute(rusqlite::params_from_iter(
            chunk.iter().flat_map(|r| r.iter()).map(Param::to_sqlite),
        ))?;
    }
    tx.commit()?;
    Ok(())
}
