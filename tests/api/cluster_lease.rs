//! Ownership of organizations in PostgreSQL (issue 13): two node identities on one database, no network.
//! Single ownership, takeover only after the lease expired, fencing of a stale owner's writes, and the
//! incarnation bump on restart.

use std::time::Duration;

use insights::domain::OrganizationId;
use insights::error::Error;
use insights::store::leases::{self as lease, Acquired, NodeIdentity, Reason};
use sqlx::PgPool;

use crate::helpers::spawn_app;

const TTL: Duration = Duration::from_secs(6);

const PUBLISHED: lease::Published<'static> = lease::Published {
    config_hash: "hash",
    roles: &[],
    state: "up",
};

async fn node(pool: &PgPool, name: &str) -> NodeIdentity {
    lease::register(
        pool,
        name,
        "127.0.0.1:0",
        &["api".into(), "actors".into()],
        "hash",
    )
    .await
    .unwrap()
}

/// Makes `name`'s last heartbeat older than the TTL, as if it had died (instead of waiting for it).
async fn expire(pool: &PgPool, name: &str) {
    sqlx::query("UPDATE cluster_nodes SET heartbeat_at = now() - interval '1 minute' WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

async fn log(pool: &PgPool, org: OrganizationId) -> Vec<(i64, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT epoch, owner_node, reason, previous_node FROM org_ownership_log
          WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org.as_uuid())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An owner's write: fenced, then a change to the organization's row.
async fn owner_write(pool: &PgPool, org: OrganizationId, epoch: i64, name: &str) -> Result<(), Error> {
    let mut tx = pool.begin().await.unwrap();
    lease::fence(&mut tx, org, epoch).await?;
    sqlx::query("UPDATE organizations SET name = $2 WHERE id = $1")
        .bind(org.as_uuid())
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Ok(())
}

async fn org_name(pool: &PgPool, org: OrganizationId) -> String {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(org.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_owner_until_its_lease_expires_then_a_takeover_fences_it() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let org = app.create_org().await.id;
    let a = node(pool, "node-a").await;
    let b = node(pool, "node-b").await;
    assert_eq!(
        lease::acquire(pool, org, &a, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 1,
            reason: Some(Reason::First)
        }
    );
    assert_eq!(
        lease::acquire(pool, org, &a, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 1,
            reason: None
        },
        "acquiring again changes nothing"
    );
    assert!(lease::heartbeat(pool, &a, &PUBLISHED).await.unwrap());
    assert_eq!(
        lease::acquire(pool, org, &b, TTL).await.unwrap(),
        Acquired::HeldBy {
            owner: "node-a".into()
        },
        "nobody takes an organization from a live owner"
    );
    owner_write(pool, org, 1, "written by a").await.unwrap();

    expire(pool, "node-a").await;
    assert_eq!(
        lease::acquire(pool, org, &b, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 2,
            reason: Some(Reason::Takeover)
        }
    );
    let stale = owner_write(pool, org, 1, "written by a after the takeover").await;
    assert!(matches!(stale, Err(Error::OwnedElsewhere)), "{stale:?}");
    assert_eq!(
        org_name(pool, org).await,
        "written by a",
        "the stale write rolled back"
    );
    owner_write(pool, org, 2, "written by b").await.unwrap();
    assert_eq!(
        log(pool, org).await,
        vec![
            (1, "node-a".into(), "first".into(), None),
            (2, "node-b".into(), "takeover".into(), Some("node-a".into())),
        ]
    );
}

#[tokio::test]
async fn a_write_in_flight_commits_before_the_takeover_and_none_after() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let org = app.create_org().await.id;
    let a = node(pool, "node-a").await;
    let b = node(pool, "node-b").await;
    lease::acquire(pool, org, &a, TTL).await.unwrap();
    expire(pool, "node-a").await;
    // A's transaction holds the shared fence lock while B tries to take over.
    let mut tx = pool.begin().await.unwrap();
    lease::fence(&mut tx, org, 1).await.unwrap();
    let takeover = {
        let (pool, b) = (pool.clone(), b.clone());
        tokio::spawn(async move { lease::acquire(&pool, org, &b, TTL).await })
    };
    sqlx::query("UPDATE organizations SET name = 'in flight' WHERE id = $1")
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        takeover.await.unwrap().unwrap(),
        Acquired::Owned {
            epoch: 2,
            reason: Some(Reason::Takeover)
        }
    );
    assert_eq!(org_name(pool, org).await, "in flight");
    assert!(owner_write(pool, org, 1, "late").await.is_err());
}

#[tokio::test]
async fn a_restart_bumps_the_incarnation_and_voids_the_old_process() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let org = app.create_org().await.id;
    let first = node(pool, "node-a").await;
    lease::acquire(pool, org, &first, TTL).await.unwrap();
    let restarted = node(pool, "node-a").await;
    assert_eq!(restarted.incarnation, first.incarnation + 1);
    assert!(
        !lease::heartbeat(pool, &first, &PUBLISHED).await.unwrap(),
        "the old process learns it must stop owning"
    );
    let b = node(pool, "node-b").await;
    assert!(
        matches!(
            lease::acquire(pool, org, &b, TTL).await.unwrap(),
            Acquired::Owned { .. }
        ),
        "the old incarnation's lease is void at once, without waiting for the TTL"
    );
    let again = node(pool, "node-c").await;
    lease::acquire(pool, org, &again, TTL).await.unwrap();
    // A node that restarts takes its own organizations back at once.
    let org2 = app.create_org().await.id;
    lease::acquire(pool, org2, &restarted, TTL).await.unwrap();
    let third = node(pool, "node-a").await;
    assert_eq!(
        lease::acquire(pool, org2, &third, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 2,
            reason: Some(Reason::Restart)
        }
    );
}

#[tokio::test]
async fn a_released_organization_is_handed_off_and_its_old_owner_fenced() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let org = app.create_org().await.id;
    let a = node(pool, "node-a").await;
    let b = node(pool, "node-b").await;
    lease::acquire(pool, org, &a, TTL).await.unwrap();
    assert!(lease::release(pool, org, 1).await.unwrap());
    assert!(owner_write(pool, org, 1, "after release").await.is_err());
    assert_eq!(
        lease::acquire(pool, org, &b, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 2,
            reason: Some(Reason::Handoff)
        }
    );
    // A node marked down gives its leases up at once.
    lease::mark_down(pool, &b).await.unwrap();
    assert!(matches!(
        lease::acquire(pool, org, &a, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 3,
            reason: Some(Reason::Takeover)
        }
    ));
}

#[tokio::test]
async fn concurrent_acquires_give_exactly_one_owner() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let nodes = [
        node(pool, "n1").await,
        node(pool, "n2").await,
        node(pool, "n3").await,
    ];
    for _ in 0..5 {
        let org = app.create_org().await.id;
        let attempts = nodes.iter().cycle().take(12).map(|n| {
            let (pool, n) = (pool.clone(), n.clone());
            tokio::spawn(async move { lease::acquire(&pool, org, &n, TTL).await.unwrap() })
        });
        let mut owners = std::collections::BTreeSet::new();
        for a in futures_util::future::join_all(attempts).await {
            match a.unwrap() {
                Acquired::Owned { epoch, .. } => {
                    assert_eq!(epoch, 1);
                }
                Acquired::HeldBy { owner } => {
                    owners.insert(owner);
                }
                Acquired::Busy => panic!("nothing holds the lock for long here"),
            }
        }
        let logged = log(pool, org).await;
        assert_eq!(logged.len(), 1, "one change of owner: {logged:?}");
        assert!(
            owners.iter().all(|o| *o == logged[0].1),
            "everyone else saw that owner"
        );
    }
}

#[tokio::test]
async fn an_owner_write_left_open_makes_a_takeover_wait_until_postgresql_ends_it() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let org = app.create_org().await.id;
    let (n1, n2) = (node(pool, "n1").await, node(pool, "n2").await);
    let Acquired::Owned { epoch, .. } = lease::acquire(pool, org, &n1, TTL).await.unwrap() else {
        panic!("n1 takes the free organization");
    };
    // n1 is cut from PostgreSQL in the middle of a write: its transaction holds the organization's
    // shared lock and says nothing more. n1's lease has expired meanwhile.
    let mut db = insights::config::Config::default().db;
    db.idle_in_transaction = Duration::from_millis(2_500);
    db.max_connections = 1;
    let n1_pool = insights::store::connect(&app.db_url, &db).unwrap();
    let mut open = n1_pool.begin().await.unwrap();
    lease::fence(&mut open, org, epoch).await.unwrap();
    expire(pool, "n1").await;
    // The takeover cannot take the lock within its lock timeout (2 s): busy, nothing changed, no error.
    assert_eq!(lease::acquire(pool, org, &n2, TTL).await.unwrap(), Acquired::Busy);
    assert_eq!(log(pool, org).await.len(), 1, "no change of owner while busy");
    // PostgreSQL ends the idle transaction (idle_in_transaction_session_timeout from the node's
    // settings), which frees the lock: the next attempt takes the organization over.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(matches!(
        lease::acquire(pool, org, &n2, TTL).await.unwrap(),
        Acquired::Owned {
            epoch: 2,
            reason: Some(Reason::Takeover)
        }
    ));
    // n1's connection was ended by the server: its write cannot commit.
    let ended = open
        .commit()
        .await
        .expect_err("the ended transaction does not commit");
    assert!(
        matches!(Error::from(ended), Error::Unavailable("database")),
        "answered as the database being unavailable (503), not as an internal error"
    );
}
