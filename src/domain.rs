//! Plain types shared by every layer: validated ids and values, roles, users, customers, interactions,
//! enrichment, field validation, and the wire wrapper of actor payloads.
//! Nothing here does I/O.

pub mod alert;
pub mod cidr;
pub mod customer;
pub mod enrichment;
pub mod event;
pub mod ids;
pub mod insight;
pub mod interaction;
pub mod pattern;
pub mod role;
pub mod sentiment;
pub mod trace;
pub mod user;
pub mod validation;
pub mod wire;

pub use cidr::Cidr;
pub use ids::{ApiKeyId, CustomerId, InteractionId, OrganizationId, SessionId, UserId};
pub use role::Role;
pub use user::{Email, Password, PersonName, User};
pub use validation::{FieldError, Fields};
pub use wire::Wire;
