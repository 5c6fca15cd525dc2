//! The cluster as this node sees it, for admins: members, roles, states, organizations owned and the
//! config hash each runs (`../shared/CLUSTER.md` §3).

use warp::Filter;
use warp::http::{Method, StatusCode};

use super::{Endpoint, Shared, authed, respond};
use crate::auth::Principal;
use crate::cluster::view::ClusterView;
use crate::domain::Role;
use crate::error::Error;

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/api/v1/cluster",
        warp::path!("api" / "v1" / "cluster")
            .and(warp::get())
            .and(authed(s))
            .then(|s: Shared, p: Principal| async move { respond(StatusCode::OK, cluster(&s, &p)) }),
    )]
}

/// The members of the cluster (the file's first, then live nodes it does not list), their roles and
/// states, the organizations each owns and the config hash each runs, as of this node's last heartbeat.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "ops", security(("bearer" = [])),
    responses((status = 200, body = ClusterView), (status = 403, body = super::errors::ErrorBody)))]
pub fn cluster(s: &Shared, p: &Principal) -> Result<ClusterView, Error> {
    p.require(Role::Admin)?;
    let ownership = s.router.ownership();
    let mut view = ClusterView::clone(&ownership.view()).with_reachable(&s.router.peers().names());
    // Read now: an ignored file changes no membership, so it does not wait for the next refresh.
    view.config_valid = ownership.membership().valid();
    Ok(view)
}
