//! The supervision tree (ractor):
//!
//! ```text
//! RootSupervisor                      one per node; restarts the organization supervisor if it fails
//! └── OrgSupervisor                   drops a failed organization actor; the next request restarts it
//!     └── OrgActor(org)               routes ingestion, numbers events, keeps the replay buffer
//!         └── CustomerActor(customer) stores interactions; started on first use, passivated when idle
//! SessionSupervisor                   one per node; counts and logs how sessions end
//! └── SessionActor(connection)        one per live dashboard connection, in its organization's pg group
//! ```
//!
//! The ML pool is a ractor factory beside them. [`ingest::Ingest`] is the door the
//! HTTP layer uses.
//!
//! Message types derive `RactorClusterMessage` when they may cross nodes (their fields encode with
//! ractor's `BytesConvertable`, structs with postcard), and `RactorMessage` when they are node-local.

pub mod customer;
pub mod ingest;
pub mod ml_pool;
pub mod names;
pub mod org;
pub mod org_supervisor;
pub mod root;
pub mod session;
