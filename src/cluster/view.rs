//! What a node knows of the cluster: the members of its file joined with the nodes' rows in
//! PostgreSQL (their heartbeats, states, config hashes and organizations), refreshed with each heartbeat.
//! `/readyz` and `GET /api/v1/cluster` answer from it without a query.

use serde::Serialize;
use utoipa::ToSchema;

use super::file::ClusterFile;
use crate::store::leases::NodeRow;

/// The state of a member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Its heartbeat is fresh and it serves.
    Up,
    /// Removed from its cluster file: it hands its organizations off and takes no more.
    Leaving,
    /// Stopped, or its heartbeat is older than the lease TTL.
    Down,
    /// Never registered in this database.
    Unknown,
}

impl MemberState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Leaving => "leaving",
            Self::Down => "down",
            Self::Unknown => "unknown",
        }
    }

    fn of(row: Option<&NodeRow>) -> Self {
        match row {
            None => Self::Unknown,
            Some(r) if !r.fresh || r.state == "down" => Self::Down,
            Some(r) if r.state == "leaving" => Self::Leaving,
            Some(_) => Self::Up,
        }
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    /// Its cluster listener (`host:port`), or for a standalone node its HTTPS listener.
    pub address: String,
    /// Its HTTPS address, when the file gives it.
    pub http: Option<String>,
    /// `api`, `actors`, `ml`.
    pub roles: Vec<String>,
    pub state: MemberState,
    /// Whether this node has a working session to it now (always true for itself).
    pub reachable: bool,
    /// Whether this node's cluster file lists it (a node removed from the file but still running is
    /// listed with `false` until it stops).
    pub configured: bool,
    /// Its current incarnation (+1 at every start); absent before it ever started.
    pub incarnation: Option<i64>,
    /// The hash of the cluster file it runs, as its last heartbeat published it.
    pub config_hash: Option<String>,
    /// Organizations it owns now.
    pub owned_organizations: i64,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// `standalone` or `clustered`.
    pub mode: &'static str,
    /// The hash of the membership this node runs (`standalone` without a file).
    pub config_hash: String,
    /// Whether the cluster file last read was valid (an invalid one is ignored).
    pub config_valid: bool,
    /// Whether every live node publishes this node's config hash; live organizations move between
    /// nodes only while they do.
    pub hashes_agree: bool,
    /// The file's members first, in its order, then live nodes it does not list.
    pub members: Vec<Member>,
}

impl ClusterView {
    /// Joins the file with the nodes' rows.
    pub fn new(
        file: &ClusterFile,
        rows: &[NodeRow],
        me: &str,
        mode: &'static str,
        config_valid: bool,
    ) -> Self {
        let row = |name: &str| rows.iter().find(|r| r.name == name);
        let mut members: Vec<Member> = file
            .nodes
            .iter()
            .map(|n| {
                let r = row(&n.name);
                Member {
                    name: n.name.clone(),
                    address: n.address.clone(),
                    http: n.http.clone(),
                    roles: n.role_names(),
                    state: MemberState::of(r),
                    reachable: n.name == me,
                    configured: true,
                    incarnation: r.map(|r| r.incarnation),
                    config_hash: r.map(|r| r.config_hash.clone()),
                    owned_organizations: r.map_or(0, |r| r.owned),
                }
            })
            .collect();
        for r in rows {
            let state = MemberState::of(Some(r));
            if file.node(&r.name).is_none() && (state != MemberState::Down || r.name == me) {
                members.push(Member {
                    name: r.name.clone(),
                    address: r.address.clone(),
                    http: None,
                    roles: r.roles.clone(),
                    state,
                    reachable: r.name == me,
                    configured: false,
                    incarnation: Some(r.incarnation),
                    config_hash: Some(r.config_hash.clone()),
                    owned_organizations: r.owned,
                });
            }
        }
        let hashes_agree = members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Up | MemberState::Leaving))
            .all(|m| m.config_hash.as_deref() == Some(file.hash.as_str()));
        Self {
            node: me.to_owned(),
            mode,
            config_hash: file.hash.clone(),
            config_valid,
            hashes_agree,
            members,
        }
    }

    /// Marks the members this node has a working session to. A member that answers over its session
    /// is alive whatever its heartbeat row says (a loaded node's heartbeat can be late), so its hash
    /// counts in `hashes_agree` too: nothing moves while a node this one talks to runs another file.
    pub fn with_reachable(mut self, peers: &[String]) -> Self {
        for m in &mut self.members {
            m.reachable = m.name == self.node || peers.contains(&m.name);
        }
        let own = self.config_hash.clone();
        self.hashes_agree = self
            .members
            .iter()
            .filter(|m| m.reachable || matches!(m.state, MemberState::Up | MemberState::Leaving))
            .all(|m| m.config_hash.as_deref() == Some(own.as_str()));
        self
    }

    /// This node's entry.
    pub fn me(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.name == self.node)
    }

    /// How many members are in each state, for the metric.
    pub fn counts(&self) -> [(MemberState, i64); 4] {
        [
            MemberState::Up,
            MemberState::Leaving,
            MemberState::Down,
            MemberState::Unknown,
        ]
        .map(|s| (s, self.members.iter().filter(|m| m.state == s).count() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, fresh: bool, state: &str, hash: &str, owned: i64) -> NodeRow {
        NodeRow {
            name: name.into(),
            incarnation: 1,
            address: "127.0.0.1:1".into(),
            roles: vec!["api".into(), "actors".into()],
            state: state.into(),
            config_hash: hash.into(),
            fresh,
            owned,
        }
    }

    #[test]
    fn members_get_their_state_and_hashes_agree_only_among_live_nodes() {
        let file = super::super::file::parse(
            "[[node]]\nname=\"a\"\naddress=\"127.0.0.1:1\"\n[[node]]\nname=\"b\"\naddress=\"127.0.0.1:2\"\n[[node]]\nname=\"c\"\naddress=\"127.0.0.1:3\"\n",
        )
        .unwrap();
        let h = file.hash.clone();
        let rows = [
            row("a", true, "up", &h, 3),
            row("b", false, "up", "old", 1),
            row("z", true, "leaving", &h, 2),
            row("y", false, "down", "old", 0),
        ];
        let v = ClusterView::new(&file, &rows, "a", "clustered", true);
        let states: Vec<_> = v.members.iter().map(|m| (m.name.as_str(), m.state)).collect();
        assert_eq!(
            states,
            [
                ("a", MemberState::Up),
                ("b", MemberState::Down),
                ("c", MemberState::Unknown),
                ("z", MemberState::Leaving)
            ],
            "a stale heartbeat is down, a node never seen is unknown, a dead unlisted node is not shown"
        );
        assert!(v.hashes_agree, "b is down, so its old hash does not count");
        assert_eq!(v.me().unwrap().owned_organizations, 3);
        let rows = [row("a", true, "up", &h, 0), row("b", true, "up", "other", 0)];
        assert!(!ClusterView::new(&file, &rows, "a", "clustered", true).hashes_agree);
        // b's heartbeat is late, but a still talks to b: b's other file counts.
        let rows = [row("a", true, "up", &h, 0), row("b", false, "up", "other", 0)];
        let v = ClusterView::new(&file, &rows, "a", "clustered", true);
        assert!(v.hashes_agree, "by the heartbeats alone b is down");
        assert!(!v.with_reachable(&["b".to_owned()]).hashes_agree);
    }
}
