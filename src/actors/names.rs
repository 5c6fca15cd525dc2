//! Registered actor names, in one place. The ractor registry is process-wide, so every name carries the
//! node name: two nodes in one process (as in the integration tests) never collide.

/// The name of a node's root supervisor.
pub fn root(node: &str) -> String {
    format!("{node}/root")
}

/// The name of a node's organization supervisor.
pub fn org_supervisor(node: &str) -> String {
    format!("{node}/orgs")
}

/// The name of a node's session supervisor.
pub fn sessions(node: &str) -> String {
    format!("{node}/sessions")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_scoped_by_node() {
        assert_ne!(super::root("a"), super::root("b"));
        assert_eq!(super::root("n1"), "n1/root");
    }
}
