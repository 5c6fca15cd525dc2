//! `cluster.toml`: the nodes of a cluster, edited by operators (`../shared/CLUSTER.md` §3.1).
//!
//! ```toml
//! [[node]]
//! name    = "insights-1"
//! address = "10.0.0.11:4697"          # its cluster listener (host:port)
//! http    = "10.0.0.11:8443"          # optional: its HTTPS address
//! roles   = ["api", "actors", "ml"]   # default ["api", "actors"]; only "actors" nodes own organizations
//! weight  = 1.0                       # optional rendezvous weight, default 1
//! ```
//!
//! [`parse`] validates a whole file and reports every problem at once; a file that fails is never applied
//! (at start the node refuses to run, on a live reload the last good membership stays). [`decide`] turns
//! a valid file, this node's name and the cookie into the node's mode. The file holds no secrets: the
//! cookie comes from `INSIGHTS_CLUSTER_COOKIE` only, and a `cookie` key in the file is refused.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The shortest cookie accepted, in bytes.
pub const MIN_COOKIE_BYTES: usize = 32;

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers HTTP and WSS.
    Api,
    /// Owns organizations (their actors run here).
    Actors,
    /// Scores texts for owners without a local model.
    Ml,
}

impl Role {
    /// The role's name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Actors => "actors",
            Self::Ml => "ml",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "api" => Some(Self::Api),
            "actors" => Some(Self::Actors),
            "ml" => Some(Self::Ml),
            _ => None,
        }
    }
}

/// One node of the file, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub name: String,
    /// Its cluster listener, `host:port`.
    pub address: String,
    /// Its HTTPS address, `host:port`, when given.
    pub http: Option<String>,
    pub roles: BTreeSet<Role>,
    pub weight: f64,
}

impl NodeEntry {
    /// Whether the node has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The role names, for the ownership tables.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// A valid `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFile {
    /// The nodes, in the file's order.
    pub nodes: Vec<NodeEntry>,
    /// SHA-256 of the membership (names, addresses, roles, weights, sorted by name), so files that
    /// differ only in comments, spacing or order have the same hash. Nodes publish it; owners move only
    /// when every node runs the same one.
    pub hash: String,
}

impl ClusterFile {
    /// The entry of the node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The names, in the file's order.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// The membership of a node that runs without a file: itself, with every role, at `address` (its
    /// HTTPS listener: a standalone node has no cluster listener). Its hash is `standalone`.
    pub fn standalone(name: &str, address: &str) -> Self {
        Self {
            nodes: vec![NodeEntry {
                name: name.to_owned(),
                address: address.to_owned(),
                http: Some(address.to_owned()),
                roles: BTreeSet::from([Role::Api, Role::Actors, Role::Ml]),
                weight: 1.0,
            }],
            hash: "standalone".to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Deserialize)]
struct RawNode {
    name: Option<String>,
    address: Option<String>,
    http: Option<String>,
    roles: Option<Vec<String>>,
    weight: Option<f64>,
    cookie: Option<toml::Value>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, toml::Value>,
}

/// Parses and validates a cluster file; every problem found is reported, each naming its node.
pub fn parse(text: &str) -> Result<ClusterFile, Vec<String>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| vec![format!("not valid TOML: {}", e.message())])?;
    let mut errors = Vec::new();
    if raw.node.is_empty() {
        errors.push("no [[node]] entries".to_owned());
    }
    let mut nodes = Vec::with_capacity(raw.node.len());
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, n) in raw.node.into_iter().enumerate() {
        let label = match &n.name {
            Some(name) => format!("node {name:?}"),
            None => format!("node #{}", i + 1),
        };
        let mut bad = |m: String| errors.push(format!("{label}: {m}"));
        if n.cookie.is_some() {
            bad(
                "`cookie` does not belong in the file: it is a secret, set INSIGHTS_CLUSTER_COOKIE"
                    .to_owned(),
            );
        }
        for key in n.other.keys() {
            bad(format!(
                "unknown key `{key}` (known: name, address, http, roles, weight)"
            ));
        }
        let name = match n.name {
            Some(name) if valid_name(&name) => Some(name),
            Some(_) => {
                bad("`name` must be 1 to 100 letters, digits, '.', '_' or '-'".to_owned());
                None
            }
            None => {
                bad("`name` is required".to_owned());
                None
            }
        };
        if let Some(name) = &name
            && !names.insert(name.clone())
        {
            bad("the name appears twice".to_owned());
        }
        let address = match n.address.as_deref().map(host_port) {
            Some(Ok(a)) => Some(a),
            Some(Err(m)) => {
                bad(format!("`address` {m}"));
                None
            }
            None => {
                bad("`address` (the cluster listener, host:port) is required".to_owned());
                None
            }
        };
        if let Some(address) = &address
            && !addresses.insert(address.clone())
        {
            bad(format!("address {address} is used by another node"));
        }
        let http = match n.http.as_deref().map(host_port) {
            Some(Ok(a)) => Some(a),
            Some(Err(m)) => {
                bad(format!("`http` {m}"));
                None
            }
            None => None,
        };
        let roles = match n.roles {
            None => BTreeSet::from([Role::Api, Role::Actors]),
            Some(list) => {
                let mut roles = BTreeSet::new();
                for r in &list {
                    match Role::parse(r) {
                        Some(role) if roles.insert(role) => {}
                        Some(_) => bad(format!("role {r:?} appears twice")),
                        None => bad(format!("unknown role {r:?} (known: api, actors, ml)")),
                    }
                }
                if list.is_empty() {
                    bad("`roles` is empty (known: api, actors, ml)".to_owned());
                }
                roles
            }
        };
        let weight = n.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0 && weight <= 1000.0) {
            bad(format!("`weight` must be above 0 and at most 1000, not {weight}"));
        }
        if let (Some(name), Some(address)) = (name, address) {
            nodes.push(NodeEntry {
                name,
                address,
                http,
                roles,
                weight,
            });
        }
    }
    if !nodes.is_empty() && !nodes.iter().any(|n| n.has(Role::Actors)) {
        errors.push("no node has the `actors` role: nobody could own an organization".to_owned());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let hash = membership_hash(&nodes);
    Ok(ClusterFile { nodes, hash })
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks `host:port` (an IP literal, `[v6]:port`, or a DNS name) and returns it trimmed.
fn host_port(value: &str) -> Result<String, String> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
        return if addr.port() > 0 {
            Ok(value.to_owned())
        } else {
            Err(format!("{value:?} must be host:port with a port from 1 to 65535"))
        };
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("{value:?} must be host:port"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if port_ok && host_ok {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} must be host:port with a port from 1 to 65535"))
    }
}

fn membership_hash(nodes: &[NodeEntry]) -> String {
    let mut sorted: Vec<&NodeEntry> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for n in sorted {
        let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
        // One line per node, fields separated by a character no field may contain.
        hasher.update(format!(
            "{}\t{}\t{}\t{}\t{}\n",
            n.name,
            n.address,
            n.http.as_deref().unwrap_or(""),
            roles.join(","),
            n.weight
        ));
    }
    hex::encode(hasher.finalize())
}

/// How a node runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// No cluster: no cluster listener; leases are still taken, so growing later is a file edit.
    Standalone,
    /// Joined to the other nodes of the file.
    Clustered,
}

/// Decides the mode of the node named `me`: standalone with no file, or with a file of one node and no
/// cookie; clustered otherwise, which needs `me` in the file and a cookie of at least
/// [`MIN_COOKIE_BYTES`]. The error is one line, for the operator.
pub fn decide(file: Option<&ClusterFile>, me: &str, cookie: Option<&str>) -> Result<Mode, String> {
    if let Some(cookie) = cookie
        && cookie.len() < MIN_COOKIE_BYTES
    {
        return Err(format!(
            "INSIGHTS_CLUSTER_COOKIE is {} bytes; it must be at least {MIN_COOKIE_BYTES} random bytes",
            cookie.len()
        ));
    }
    let Some(file) = file else {
        return Ok(Mode::Standalone);
    };
    if file.node(me).is_none() {
        return Err(format!(
            "node {me:?} (INSIGHTS_NODE_NAME) is not in the cluster file (it lists {})",
            file.names().join(", ")
        ));
    }
    match (file.nodes.len(), cookie) {
        (1, None) => Ok(Mode::Standalone),
        (_, Some(_)) => Ok(Mode::Clustered),
        (n, None) => Err(format!(
            "the cluster file lists {n} nodes: set INSIGHTS_CLUSTER_COOKIE (at least {MIN_COOKIE_BYTES} random bytes, the same on every node)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TWO: &str = r#"
        [[node]]
        name = "a"
        address = "127.0.0.1:4697"
        http = "127.0.0.1:8443"
        roles = ["api", "actors", "ml"]

        [[node]]
        name = "b"
        address = "insights-b.internal:4697"
        weight = 2.5
    "#;

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let file = parse(TWO).unwrap();
        assert_eq!(file.names(), ["a", "b"]);
        let b = file.node("b").unwrap();
        assert_eq!(
            b.roles,
            BTreeSet::from([Role::Api, Role::Actors]),
            "default roles"
        );
        assert_eq!(b.weight, 2.5);
        assert_eq!(b.http, None);
        assert!(file.node("a").unwrap().has(Role::Ml));
        assert_eq!(file.hash.len(), 64);
    }

    #[test]
    fn every_problem_is_reported_with_its_node() {
        let errors = parse(
            r#"
            [[node]]
            name = "a"
            address = "nope"
            roles = ["api", "cook"]
            cookie = "s3cret"
            colour = "red"

            [[node]]
            name = "a"
            address = "127.0.0.1:0"
            weight = -1.0

            [[node]]
            address = "127.0.0.1:1"
            "#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "node \"a\": `address` \"nope\" must be host:port",
            "node \"a\": unknown role \"cook\"",
            "node \"a\": `cookie` does not belong in the file",
            "node \"a\": unknown key `colour`",
            "node \"a\": the name appears twice",
            "node \"a\": `address` \"127.0.0.1:0\" must be host:port",
            "node \"a\": `weight` must be above 0",
            "node #3: `name` is required",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(
            parse("[[node]]\nname = 'x'\naddress = '127.0.0.1:1'\nroles = ['api']\n")
                .unwrap_err()
                .join("")
                .contains("no node has the `actors` role")
        );
        assert!(parse("").unwrap_err()[0].contains("no [[node]]"));
        assert!(parse("[[node]\n").unwrap_err()[0].contains("not valid TOML"));
        assert!(
            parse("[[node]]\nname='a'\naddress='127.0.0.1:1'\n[[node]]\nname='b'\naddress='127.0.0.1:1'\n")
                .unwrap_err()
                .join("")
                .contains("used by another node")
        );
    }

    #[test]
    fn the_mode_follows_the_file_and_the_cookie() {
        let cookie = "x".repeat(MIN_COOKIE_BYTES);
        let two = parse(TWO).unwrap();
        let one = parse("[[node]]\nname = 'a'\naddress = '127.0.0.1:4697'\n").unwrap();
        assert_eq!(decide(None, "a", None), Ok(Mode::Standalone));
        assert_eq!(decide(Some(&one), "a", None), Ok(Mode::Standalone));
        assert_eq!(decide(Some(&one), "a", Some(&cookie)), Ok(Mode::Clustered));
        assert_eq!(decide(Some(&two), "b", Some(&cookie)), Ok(Mode::Clustered));
        let missing = decide(Some(&two), "c", Some(&cookie)).unwrap_err();
        assert!(missing.contains("\"c\"") && missing.contains("a, b"), "{missing}");
        assert!(
            decide(Some(&two), "a", None)
                .unwrap_err()
                .contains("INSIGHTS_CLUSTER_COOKIE")
        );
        assert!(
            decide(Some(&two), "a", Some("short"))
                .unwrap_err()
                .contains("at least 32")
        );
        assert!(
            !decide(Some(&two), "a", None).unwrap_err().contains('\n'),
            "one line"
        );
    }

    #[test]
    fn the_hash_ignores_comments_spacing_and_order_but_not_membership() {
        let a = parse(TWO).unwrap();
        let reordered = r#"
            # the same nodes, listed the other way round
            [[node]]
            weight = 2.5
            address = "insights-b.internal:4697"
            name = "b"
            [[node]]
            name = "a"
            roles = ["ml", "actors", "api"]
            address = "127.0.0.1:4697"
            http = "127.0.0.1:8443"
        "#;
        assert_eq!(a.hash, parse(reordered).unwrap().hash);
        let moved = TWO.replace("127.0.0.1:4697", "127.0.0.2:4697");
        assert_ne!(a.hash, parse(&moved).unwrap().hash);
        let reweighted = TWO.replace("2.5", "3.0");
        assert_ne!(a.hash, parse(&reweighted).unwrap().hash);
    }

    proptest! {
        /// Any file of distinct valid nodes parses, keeps its nodes in order, and hashes the same
        /// whatever the order of its entries.
        #[test]
        fn valid_files_round_trip(count in 1usize..6, weights in proptest::collection::vec(1u32..100, 6), rotate in 0usize..6) {
            let entries: Vec<String> = (0..count)
                .map(|i| format!("[[node]]\nname = \"n{i}\"\naddress = \"127.0.0.{}:{}\"\nweight = {}\n", i + 1, 4000 + i, weights[i]))
                .collect();
            let file = parse(&entries.concat()).unwrap();
            prop_assert_eq!(file.nodes.len(), count);
            let mut rotated = entries.clone();
            rotated.rotate_left(rotate % count);
            prop_assert_eq!(parse(&rotated.concat()).unwrap().hash, file.hash);
        }
    }
}
