//! Plain types shared by every layer: validated ids and values, roles, users, and field validation.
//! Nothing here does I/O.

pub mod ids;
pub mod role;
pub mod user;
pub mod validation;

pub use ids::{ApiKeyId, OrganizationId, SessionId, UserId};
pub use role::Role;
pub use user::{Email, Password, PersonName, User};
pub use validation::{FieldError, Fields};
