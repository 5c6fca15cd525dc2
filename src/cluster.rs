//! The cluster: which node owns which organization. Placement (`cluster::placement`) says where an
//! organization should live; ownership (`cluster::lease`) is decided in PostgreSQL with a fencing token, so
//! there is never a second effective owner whatever the network does. The design, and the facts about
//! ractor_cluster it rests on: `../shared/CLUSTER.md`.

pub mod lease;
pub mod placement;
