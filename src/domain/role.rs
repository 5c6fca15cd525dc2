//! Roles of users within their organization (R1.9).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do. Ordered: each role can do everything the roles before it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type, ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "user_role", rename_all = "lowercase")]
pub enum Role {
    /// Reads customers, interactions and insights.
    Viewer,
    /// Also writes customers and interactions.
    Analyst,
    /// Also manages the organization's users and API keys.
    Admin,
}

impl Role {
    /// Parses the lowercase name of a role.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "analyst" => Ok(Self::Analyst),
            "admin" => Ok(Self::Admin),
            _ => Err("must be one of viewer, analyst, admin".to_owned()),
        }
    }

    /// Returns the lowercase name used in JSON and tokens.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        }
    }

    /// Tells whether this role includes everything `required` may do.
    pub fn allows(&self, required: Role) -> bool {
        *self >= required
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::Admin.allows(Role::Analyst));
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Analyst.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Analyst));
        assert!(!Role::Analyst.allows(Role::Admin));
    }

    #[test]
    fn roles_parse_their_own_names_only() {
        for role in [Role::Viewer, Role::Analyst, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("root").is_err());
    }
}
