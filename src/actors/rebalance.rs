//! Moving organizations to where they should live (`../shared/CLUSTER.md` §4.5). Every
//! `rebalance_interval` a clustered node compares each organization it owns with its rendezvous home
//! among the members reachable for at least `join_grace` (and itself, unless it is leaving) and hands
//! off the ones that belong elsewhere, one at a time. Nothing moves while the live nodes run different
//! cluster files (their published hashes differ): a half-applied edit would move organizations back and
//! forth. A node that joins, comes back after a restart, or is removed from the file is rebalanced this
//! way; a crashed owner's organizations are taken over by lease expiry instead, whatever the hashes say.

use std::time::Duration;

use tokio::sync::watch;

use super::route::Router;

/// Starts the rebalancing loop of a clustered node.
pub fn spawn(router: Router, interval: Duration, grace: Duration, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            rebalance(&router, grace).await;
        }
    });
}

/// One pass: hands off every local organization whose home is another member.
async fn rebalance(router: &Router, grace: Duration) {
    let ownership = router.ownership();
    if !ownership.valid() {
        return;
    }
    // The peers this node has a session to count even when their heartbeat is late (a loaded machine).
    let view =
        crate::cluster::view::ClusterView::clone(&ownership.view()).with_reachable(&router.peers().names());
    if !view.hashes_agree {
        return;
    }
    let me = ownership.node().name.clone();
    for org in router.local_orgs() {
        let Some(target) = router.target(org, grace) else {
            continue;
        };
        if target != me {
            let _ = router.hand_off(org, &target).await;
        }
    }
}
