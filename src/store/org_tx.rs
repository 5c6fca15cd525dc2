//! The one way to write an organization's data. An [`OrgTx`] is a transaction bound to one organization:
//!
//! - an owner's transaction is **fenced** as its first step (`leases::fence`): it commits only while the
//!   node still holds the organization at its lease epoch;
//! - its [`commit`](OrgTx::commit) gives the organization a new **data version** once the commit is
//!   durable, so no cached summary of the organization outlives a write to it (R14.7).
//!
//! The repositories' write functions take an `OrgTx` and read the organization from it, so no write
//! path can forget the fence or the invalidation, and none can write into another tenant's rows.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use std::collections::BTreeSet;

use super::cache::Cache;
use super::leases;
use crate::domain::OrganizationId;
use crate::error::Error;

/// A write transaction of one organization.
pub struct OrgTx {
    tx: Transaction<'static, Postgres>,
    org: OrganizationId,
    cache: Cache,
}

impl OrgTx {
    /// Opens a write of the organization's owner, fenced by the lease `epoch` it acquired the
    /// organization at: fails with [`Error::OwnedElsewhere`] (and writes nothing) once that lease ended.
    pub async fn owner(pool: &PgPool, cache: &Cache, org: OrganizationId, epoch: i64) -> Result<Self, Error> {
        let mut tx = pool.begin().await?;
        leases::fence(&mut tx, org, epoch).await?;
        Ok(Self {
            tx,
            org,
            cache: cache.clone(),
        })
    }

    /// Opens a write that no owner makes: customer records written by the API, and the bulk import
    /// (which runs beside the nodes). Interactions, scores, patterns and counters of a running
    /// organization are written by its owner.
    pub async fn unowned(pool: &PgPool, cache: &Cache, org: OrganizationId) -> Result<Self, Error> {
        Ok(Self {
            tx: pool.begin().await?,
            org,
            cache: cache.clone(),
        })
    }

    /// The organization this transaction writes.
    pub fn org(&self) -> OrganizationId {
        self.org
    }

    /// Commits, then gives the organization a new data version (before the caller acknowledges).
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        self.cache.bump_data_version(self.org).await;
        Ok(())
    }
}

impl Deref for OrgTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for OrgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A write transaction of several organizations' owners: a group commit of single interactions
/// (`group_commit`). Each organization is fenced before anything of it is written, and its commit gives
/// every organization it wrote a new data version, as [`OrgTx`] does for one.
pub struct GroupTx {
    tx: Transaction<'static, Postgres>,
    fenced: BTreeSet<(OrganizationId, i64)>,
    cache: Cache,
}

impl GroupTx {
    /// Opens the transaction; nothing of an organization may be written before [`fence`](Self::fence)
    /// said yes for it.
    pub async fn begin(pool: &PgPool, cache: &Cache) -> Result<Self, Error> {
        Ok(Self {
            tx: pool.begin().await?,
            fenced: BTreeSet::new(),
            cache: cache.clone(),
        })
    }

    /// Fences the organization at its owner's lease `epoch` inside this transaction: `false` (and the
    /// transaction stays usable for the others) when that lease ended.
    pub async fn fence(&mut self, org: OrganizationId, epoch: i64) -> Result<bool, Error> {
        if self.fenced.contains(&(org, epoch)) {
            return Ok(true);
        }
        match leases::fence(&mut self.tx, org, epoch).await {
            Ok(()) => {
                self.fenced.insert((org, epoch));
                Ok(true)
            }
            Err(Error::OwnedElsewhere) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Commits, then gives each organization written a new data version.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        let mut last = None;
        for (org, _) in &self.fenced {
            if last != Some(*org) {
                self.cache.bump_data_version(*org).await;
                last = Some(*org);
            }
        }
        Ok(())
    }
}

impl Deref for GroupTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
