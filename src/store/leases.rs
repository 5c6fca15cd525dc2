//! Ownership of organizations, decided in PostgreSQL with a fencing token (`../shared/CLUSTER.md` §4).
//!
//! - Each node registers under its name with a new **incarnation** (+1 on every start) and heartbeats its
//!   row. An organization's lease is valid while its owner's heartbeat is younger than the TTL and its
//!   incarnation is the one that acquired it: there is one renewal per node, not one per organization.
//! - [`acquire`] takes an organization only when it is free: never owned, released, its owner's lease
//!   expired, or owned by an earlier incarnation of this same node. Each change of owner bumps the
//!   organization's **epoch** and is appended to `org_ownership_log`. Nobody takes an organization from
//!   a live owner.
//! - [`fence`] is the first step of every owner write transaction: a shared advisory lock on the
//!   organization, then a check that the epoch is still this owner's. A takeover holds the exclusive lock
//!   while it bumps the epoch, so owner writes in flight commit before it, and later ones read the new
//!   epoch and roll back: no old-owner write commits after a takeover commits. Advisory locks live in the
//!   lock manager's memory, so the fence writes no WAL and creates no row locks.
//! - A node that cannot renew stops owning by itself: `cluster::LeaseClock` runs out (monotonic clock) a
//!   margin before the others could see its heartbeat as stale.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::domain::OrganizationId;
use crate::error::Error;

/// A running node as the ownership tables know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: String,
    pub incarnation: i64,
}

/// Why an organization changed hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nobody had owned it.
    First,
    /// Its owner's lease had expired.
    Takeover,
    /// Its owner released it.
    Handoff,
    /// It was this node's before it restarted.
    Restart,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Takeover => "takeover",
            Self::Handoff => "handoff",
            Self::Restart => "restart",
        }
    }
}

/// The outcome of [`acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This node owns the organization at `epoch`; `reason` is `None` when it already did.
    Owned { epoch: i64, reason: Option<Reason> },
    /// A live other node owns it.
    HeldBy { owner: String },
    /// The organization's lock stayed held past the lock timeout: an owner's write is still open (a
    /// node cut from PostgreSQL mid-transaction, until PostgreSQL ends it). Nothing changed; ask again.
    Busy,
}

/// SQLSTATE of a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The advisory-lock key of an organization. A collision only makes two organizations wait on each
/// other briefly; the epoch is the real fence.
pub fn org_key(org: OrganizationId) -> i64 {
    let bytes = org.as_uuid().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    i64::from_be_bytes(first) ^ 0x494E_5349_4748_5453
}

/// Registers this node's start: a new incarnation, state `up`, a fresh heartbeat.
pub async fn register(
    pool: &PgPool,
    name: &str,
    address: &str,
    roles: &[String],
    config_hash: &str,
) -> Result<NodeIdentity, Error> {
    let incarnation = sqlx::query_scalar!(
        r#"INSERT INTO cluster_nodes (name, incarnation, address, roles, state, config_hash)
           VALUES ($1, 1, $2, $3, 'up', $4)
           ON CONFLICT (name) DO UPDATE
              SET incarnation = cluster_nodes.incarnation + 1, address = EXCLUDED.address,
                  roles = EXCLUDED.roles, state = 'up', config_hash = EXCLUDED.config_hash,
                  started_at = now(), heartbeat_at = now()
           RETURNING incarnation"#,
        name,
        address,
        roles,
        config_hash
    )
    .fetch_one(pool)
    .await?;
    Ok(NodeIdentity {
        name: name.to_owned(),
        incarnation,
    })
}

/// Renews this node's heartbeat and publishes what it runs: the hash of its cluster file, its roles and
/// its state (`up`, or `leaving` once the file no longer names it). `false` means another process
/// registered under this name since (a later incarnation): this one must stop owning at once.
pub async fn heartbeat(pool: &PgPool, node: &NodeIdentity, published: &Published<'_>) -> Result<bool, Error> {
    let updated = sqlx::query!(
        "UPDATE cluster_nodes SET heartbeat_at = now(), config_hash = $3, roles = $4, state = $5
          WHERE name = $1 AND incarnation = $2",
        node.name,
        node.incarnation,
        published.config_hash,
        published.roles,
        published.state
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// What a node publishes with each heartbeat.
#[derive(Debug, Clone)]
pub struct Published<'a> {
    pub config_hash: &'a str,
    pub roles: &'a [String],
    /// `up` or `leaving`.
    pub state: &'a str,
}

/// A node as the ownership tables know it, with the organizations it owns now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub incarnation: i64,
    pub address: String,
    pub roles: Vec<String>,
    /// `up`, `leaving` or `down` as the node last wrote it.
    pub state: String,
    pub config_hash: String,
    /// Whether its heartbeat is younger than the lease TTL.
    pub fresh: bool,
    /// Organizations it holds (not released, acquired by its current incarnation).
    pub owned: i64,
}

/// Every node that ever registered, by name.
pub async fn nodes(pool: &PgPool, ttl: Duration) -> Result<Vec<NodeRow>, Error> {
    let rows = sqlx::query!(
        r#"SELECT n.name, n.incarnation, n.address, n.roles, n.state, n.config_hash,
                  n.heartbeat_at > now() - make_interval(secs => $1) AS "fresh!",
                  (SELECT count(*) FROM org_ownership o
                    WHERE o.owner_node = n.name AND o.owner_incarnation = n.incarnation
                      AND NOT o.released) AS "owned!"
             FROM cluster_nodes n ORDER BY n.name"#,
        ttl.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| NodeRow {
            name: r.name,
            incarnation: r.incarnation,
            address: r.address,
            roles: r.roles,
            state: r.state,
            config_hash: r.config_hash,
            fresh: r.fresh,
            owned: r.owned,
        })
        .collect())
}

/// Marks this node down (a graceful stop): its leases end now rather than after the TTL.
pub async fn mark_down(pool: &PgPool, node: &NodeIdentity) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE cluster_nodes SET state = 'down' WHERE name = $1 AND incarnation = $2",
        node.name,
        node.incarnation
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes the organization for `node` if it is free (see the module docs), in one transaction that holds
/// the organization's exclusive advisory lock, so owner writes in flight finish first.
pub async fn acquire(
    pool: &PgPool,
    org: OrganizationId,
    node: &NodeIdentity,
    ttl: Duration,
) -> Result<Acquired, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    // The row exists before the lock is taken, so the lock always guards a row.
    sqlx::query!(
        "INSERT INTO org_ownership (organization_id, owner_node, owner_incarnation, epoch)
         VALUES ($1, '', 0, 0) ON CONFLICT DO NOTHING",
        org.as_uuid()
    )
    .execute(&mut *tx)
    .await?;
    let locked = sqlx::query!("SELECT pg_advisory_xact_lock($1)", org_key(org))
        .execute(&mut *tx)
        .await;
    match locked {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            tracing::debug!(org = %org, "organization lock busy; not acquired");
            tx.rollback().await?;
            return Ok(Acquired::Busy);
        }
        Err(e) => return Err(e.into()),
    }
    let current = sqlx::query!(
        r#"SELECT o.owner_node, o.owner_incarnation, o.epoch, o.released,
                  coalesce(n.incarnation = o.owner_incarnation AND n.state <> 'down'
                           AND n.heartbeat_at > now() - make_interval(secs => $2), false) AS "alive!",
                  n.heartbeat_at AS "heartbeat_at?"
             FROM org_ownership o LEFT JOIN cluster_nodes n ON n.name = o.owner_node
            WHERE o.organization_id = $1
              FOR UPDATE OF o"#,
        org.as_uuid(),
        ttl.as_secs_f64()
    )
    .fetch_one(&mut *tx)
    .await?;
    let mine = current.owner_node == node.name;
    if mine && current.owner_incarnation == node.incarnation && !current.released {
        tx.rollback().await?;
        return Ok(Acquired::Owned {
            epoch: current.epoch,
            reason: None,
        });
    }
    let reason = if current.owner_node.is_empty() {
        Reason::First
    } else if current.released {
        Reason::Handoff
    } else if mine && current.owner_incarnation < node.incarnation {
        Reason::Restart
    } else if !current.alive {
        Reason::Takeover
    } else {
        tx.rollback().await?;
        return Ok(Acquired::HeldBy {
            owner: current.owner_node,
        });
    };
    let epoch = sqlx::query_scalar!(
        "UPDATE org_ownership
            SET owner_node = $2, owner_incarnation = $3, epoch = epoch + 1, released = false,
                acquired_at = now()
          WHERE organization_id = $1
         RETURNING epoch",
        org.as_uuid(),
        node.name,
        node.incarnation
    )
    .fetch_one(&mut *tx)
    .await?;
    let previous = (!current.owner_node.is_empty()).then_some(current.owner_node.as_str());
    sqlx::query!(
        "INSERT INTO org_ownership_log
            (organization_id, epoch, owner_node, owner_incarnation, reason, previous_node,
             previous_heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        org.as_uuid(),
        epoch,
        node.name,
        node.incarnation,
        reason.as_str(),
        previous,
        current.heartbeat_at
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(org = %org, node = %node.name, epoch, reason = reason.as_str(), "organization acquired");
    Ok(Acquired::Owned {
        epoch,
        reason: Some(reason),
    })
}

/// The live owner of the organization, if any: not released, acquired by its owner's current
/// incarnation, whose heartbeat is younger than `ttl` and which is not down. A read: it takes nothing.
pub async fn live_owner(pool: &PgPool, org: OrganizationId, ttl: Duration) -> Result<Option<String>, Error> {
    let owner = sqlx::query_scalar!(
        "SELECT o.owner_node FROM org_ownership o JOIN cluster_nodes n ON n.name = o.owner_node
          WHERE o.organization_id = $1 AND NOT o.released AND n.incarnation = o.owner_incarnation
            AND n.state <> 'down' AND n.heartbeat_at > now() - make_interval(secs => $2)",
        org.as_uuid(),
        ttl.as_secs_f64()
    )
    .fetch_optional(pool)
    .await?;
    Ok(owner)
}

/// The first step of an owner's write transaction: fails with [`Error::OwnedElsewhere`] (and the caller
/// rolls back) unless the organization is still owned at `epoch`. Run it on the transaction's connection.
pub async fn fence(conn: &mut PgConnection, org: OrganizationId, epoch: i64) -> Result<(), Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock_shared($1)", org_key(org))
        .execute(&mut *conn)
        .await?;
    // A separate statement: under READ COMMITTED it reads a snapshot taken after the lock was granted,
    // so it sees a takeover that committed while this transaction waited.
    let current = sqlx::query_scalar!(
        r#"SELECT (epoch = $2 AND NOT released) AS "current!" FROM org_ownership WHERE organization_id = $1"#,
        org.as_uuid(),
        epoch
    )
    .fetch_optional(&mut *conn)
    .await?;
    if current == Some(true) {
        Ok(())
    } else {
        tracing::warn!(org = %org, epoch, "write fenced: this node no longer owns the organization");
        Err(Error::OwnedElsewhere)
    }
}

/// Gives the organization up (a hand-off): from now on this owner's writes at `epoch` fail the fence.
pub async fn release(pool: &PgPool, org: OrganizationId, epoch: i64) -> Result<bool, Error> {
    let updated = sqlx::query!(
        "UPDATE org_ownership SET released = true WHERE organization_id = $1 AND epoch = $2 AND NOT released",
        org.as_uuid(),
        epoch
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_keys_differ_for_different_organizations() {
        let a = OrganizationId(uuid::Uuid::from_u128(1 << 64));
        let b = OrganizationId(uuid::Uuid::from_u128(2 << 64));
        assert_ne!(org_key(a), org_key(b));
        assert_eq!(org_key(a), org_key(a));
    }
}
