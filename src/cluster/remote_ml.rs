//! Scoring on other nodes (R8.11, `../shared/CLUSTER.md` §3.9): an owner without a local model sends
//! its texts to a reachable member with the `ml` role, chosen as the less busy of two picked at random
//! (by this node's count of its calls in flight: Mitzenmacher's power of two choices). The prediction
//! cache is in Redis, so it is shared by every node that scores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::rpc::CallResult;
use rand::seq::IndexedRandom as _;

use super::file::Role;
use super::gateway::GatewayMsg;
use super::node::Peers;
use super::watch::Membership;
use crate::domain::Wire;
use crate::domain::sentiment::Scores;
use crate::error::Error;

/// The `ml` members this node can score on. Cheap to clone.
#[derive(Clone)]
pub struct RemoteMl {
    peers: Peers,
    membership: Membership,
    inflight: Arc<Mutex<HashMap<String, usize>>>,
    timeout: Duration,
}

impl RemoteMl {
    /// Scores through `peers` that have the `ml` role in `membership`'s file; a call may take `timeout`.
    pub fn new(peers: Peers, membership: Membership, timeout: Duration) -> Self {
        Self {
            peers,
            membership,
            inflight: Arc::default(),
            timeout,
        }
    }

    /// The reachable members with the `ml` role.
    pub fn candidates(&self) -> Vec<String> {
        let file = self.membership.file();
        self.peers
            .names()
            .into_iter()
            .filter(|n| file.node(n).is_some_and(|e| e.has(Role::Ml)))
            .collect()
    }

    /// Scores `texts` on one `ml` member.
    pub async fn score(&self, texts: Vec<String>) -> Result<Vec<Scores>, Error> {
        let node = self.pick().ok_or(Error::Unavailable("sentiment model"))?;
        let gateway = self
            .peers
            .gateway(&node)
            .ok_or(Error::Unavailable("sentiment model"))?;
        self.count(&node, 1);
        let n = texts.len();
        let answer = gateway
            .call(
                |reply| GatewayMsg::Score(Wire::new(texts), reply),
                Some(self.timeout),
            )
            .await;
        self.count(&node, -1);
        match answer {
            Ok(CallResult::Success(Wire(Ok(Ok(scores))))) if scores.len() == n => Ok(scores),
            other => {
                tracing::warn!(node, answer = ?other.map(|r| matches!(r, CallResult::Success(_))), "remote scoring failed");
                Err(Error::Unavailable("sentiment model"))
            }
        }
    }

    /// Two random candidates, the one with fewer calls in flight.
    fn pick(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut rng = rand::rng();
        let two: Vec<&String> = candidates.choose_multiple(&mut rng, 2).collect();
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        two.into_iter()
            .min_by_key(|n| inflight.get(*n).copied().unwrap_or(0))
            .cloned()
    }

    fn count(&self, node: &str, delta: isize) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let n = inflight.entry(node.to_owned()).or_insert(0);
        *n = n.saturating_add_signed(delta);
    }
}
