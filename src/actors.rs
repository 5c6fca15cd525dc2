//! The supervision tree (ractor):
//!
//! ```text
//! RootSupervisor                      one per node; restarts the organization supervisor if it fails
//! └── OrgSupervisor                   drops a failed organization actor; the next request restarts it
//!     └── OrgActor(org)               routes ingestion, numbers events, keeps the replay buffer
//!         └── CustomerActor(customer) stores interactions; started on first use, passivated when idle
//!                                     (one per customer in the cluster: its organization has one owner)
//! SessionSupervisor                   one per node; counts and logs how sessions end
//! └── SessionActor(connection)        one per live dashboard connection, subscribed to its organization
//! ```
//!
//! The ML pool is a ractor factory beside them, used through the node's sentiment service
//! ([`sentiment::Ml`]); the scoring pipeline ([`scoring`]) takes what ingestion hands off ([`scorer`]).
//! [`route::Router`] is the one way to an organization's actor (HTTP ingest, session replay, score
//! delivery); [`ingest::Ingest`] is the door ingestion uses; [`fanout::Fanout`] carries an organization's
//! events to this node's sessions.
//!
//! The modules depend on each other in one direction only:
//!
//! ```text
//! ingest ─► route ─► org_supervisor ─► org ─► customer ─► scorer
//! session ─► route      scoring ─► route, sentiment ─► ml_pool      org ─► fanout
//! ```
//!
//! Every message type here is node-local (`RactorMessage`): no organization, customer, session or ML
//! actor is reachable from another node, so a node with 100,000 live customers advertises none of them
//! to its peers. Work that crosses nodes will go through one remotable actor per node (the gateway,
//! `../shared/CLUSTER.md` §3.5), whose messages encode with postcard. The `Wire` wrappers the payloads
//! still carry are that encoding, ready for the gateway.

pub mod alerts;
pub mod customer;
pub mod fanout;
pub mod gateway;
pub mod ingest;
pub mod ml_pool;
pub mod names;
pub mod org;
pub mod org_supervisor;
pub mod rebalance;
pub mod root;
pub mod route;
pub mod scorer;
pub mod scoring;
pub mod sentiment;
pub mod session;
