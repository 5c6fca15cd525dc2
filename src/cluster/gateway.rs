//! What nodes say to each other (`../shared/CLUSTER.md` §3.5). Each node runs one remotable actor, its
//! gateway (`<node>/gateway`, in the process group `insights`/`gateways`); every other actor is
//! node-local. The gateway's handler lives with the actors (`actors::gateway`); this module is only the
//! protocol, so the cluster layer can ping peers without depending on the actors.
//!
//! Payloads travel as postcard inside [`Wire`]. postcard is not self-describing, so a peer built with
//! another message format would misread frames: [`WIRE_VERSION`] goes with every ping, and a peer that
//! answers another version is disconnected.

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::domain::event::{EventsAfter, HandOff, OrgEvent};
use crate::domain::interaction::{BatchItem, IngestOutcome, NewInteraction, ScoredInteraction};
use crate::domain::sentiment::Scores;
use crate::domain::{CustomerId, FieldError, OrganizationId, Wire};
use crate::error::Error;

/// The version of the messages below; bump it with any change to them or to the types they carry.
pub const WIRE_VERSION: u32 = 3;

/// The process-group scope and group the gateways join.
pub const SCOPE: &str = "insights";
pub const GROUP: &str = "gateways";

/// The registered name of a node's gateway.
pub fn gateway_name(node: &str) -> String {
    format!("{node}/gateway")
}

/// Who a node is, exchanged in every ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    pub wire_version: u32,
    pub node: String,
    pub incarnation: i64,
    pub config_hash: String,
}

/// A request for an organization, sent to the node believed to own it. The receiver serves it only
/// as its owner and never forwards it again (at most one hop: a wrong guess is answered
/// [`Failure::NotOwner`] and the sender re-routes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded<T> {
    pub org: OrganizationId,
    /// The node that forwarded it.
    pub from: String,
    /// The request it is part of, so the owner's log events name it too (R11.1).
    pub request_id: Option<String>,
    pub body: T,
}

/// The owner's answer to a forwarded request.
pub type Routed<T> = Result<T, Failure>;

/// Why a forwarded request failed, as far as the sender needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The receiver does not own the organization; `owner` is who does, when it knows.
    NotOwner {
        owner: Option<String>,
    },
    NotFound(String),
    Overloaded(String),
    Unavailable(String),
    Validation(Vec<FieldError>),
    Internal(String),
}

impl Failure {
    /// The failure an error of the owner becomes on the wire.
    pub fn from_error(e: &Error) -> Self {
        match e {
            Error::OwnedElsewhere => Self::NotOwner { owner: None },
            Error::NotFound(what) => Self::NotFound((*what).to_owned()),
            Error::Overloaded(why) => Self::Overloaded((*why).to_owned()),
            Error::Unavailable(what) => Self::Unavailable((*what).to_owned()),
            Error::NodeUnavailable(why) => Self::Unavailable(why.clone()),
            Error::Validation(errors) => Self::Validation(errors.clone()),
            other => Self::Internal(other.to_string()),
        }
    }

    /// The error the sender answers its client with.
    pub fn into_error(self) -> Error {
        match self {
            Self::NotOwner { .. } => Error::OwnedElsewhere,
            Self::NotFound(what) => Error::NotFound(known(
                &what,
                &["customer", "organization", "interaction"],
                "resource",
            )),
            Self::Overloaded(_) => {
                Error::Overloaded("the organization's owner is at capacity; retry shortly")
            }
            Self::Unavailable(what) => {
                Error::Unavailable(known(&what, &["database", "model", "actor system"], "dependency"))
            }
            Self::Validation(errors) => Error::Validation(errors),
            Self::Internal(e) => Error::internal(anyhow::anyhow!("on the owner: {e}")),
        }
    }
}

/// The static name among `names` equal to `value`, or `otherwise`.
fn known(value: &str, names: &[&'static str], otherwise: &'static str) -> &'static str {
    names.iter().copied().find(|n| *n == value).unwrap_or(otherwise)
}

/// The items of a batch as the API node validated them, in order.
pub type BatchItems = Vec<Result<NewInteraction, Vec<FieldError>>>;

/// The gateway's messages.
// Ingest dominates the traffic between nodes, so it is not boxed (as for the local messages).
#[allow(clippy::large_enum_variant)]
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// Liveness and compatibility: answered with the receiver's own [`PingInfo`].
    #[rpc]
    Ping(Wire<PingInfo>, RpcReplyPort<Wire<PingInfo>>),
    /// Stores one interaction at its organization's owner.
    #[rpc]
    Ingest(
        Wire<Forwarded<NewInteraction>>,
        RpcReplyPort<Wire<Routed<IngestOutcome>>>,
    ),
    /// Stores a batch at its organization's owner.
    #[rpc]
    Batch(
        Wire<Forwarded<BatchItems>>,
        RpcReplyPort<Wire<Routed<Vec<BatchItem>>>>,
    ),
    /// The owner's buffered events after a number (a session's replay or gap fill).
    #[rpc]
    EventsAfter(Wire<Forwarded<u64>>, RpcReplyPort<Wire<Routed<EventsAfter>>>),
    /// Scores computed elsewhere for one of the owner's interactions.
    Scored(Wire<Forwarded<Vec<ScoredInteraction>>>),
    /// A customer's row changed (through another node): the owner's live actor re-reads it.
    CustomerChanged(Wire<Forwarded<CustomerId>>),
    /// The owner's events, in order, for the receiver's sessions of the organization.
    Events(Wire<(OrganizationId, Vec<OrgEvent>)>),
    /// Takes over an organization its owner released for the receiver (a hand-off), continuing its
    /// numbering and replay buffer; answered with the new epoch.
    #[rpc]
    TakeOver(Wire<Forwarded<HandOff>>, RpcReplyPort<Wire<Routed<i64>>>),
    /// Scores texts with the receiver's model (members with the `ml` role), in order.
    #[rpc]
    Score(Wire<Vec<String>>, RpcReplyPort<Wire<Result<Vec<Scores>, String>>>),
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable as _;

    use super::*;

    #[test]
    fn failures_survive_the_wire_and_map_back_to_the_same_errors() {
        for e in [
            Error::NotFound("customer"),
            Error::Unavailable("database"),
            Error::OwnedElsewhere,
            Error::Validation(vec![FieldError::new("channel", "bad")]),
        ] {
            let f = Failure::from_error(&e);
            let back = Wire::<Routed<u8>>::from_bytes(Wire::new(Err::<u8, Failure>(f)).into_bytes());
            let again = back.0.unwrap().unwrap_err().into_error();
            assert_eq!(again.to_string(), e.to_string());
        }
        assert!(matches!(
            Failure::NotFound("weird".into()).into_error(),
            Error::NotFound("resource")
        ));
    }
}
