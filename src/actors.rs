//! The supervision tree (ractor). Today the root supervisor of a node; organizations, customers, the ML
//! pool and WebSocket sessions hang under it as they are built.
//!
//! Message types derive `RactorClusterMessage` when they may cross nodes (their fields encode with
//! ractor's `BytesConvertable`, structs with postcard), and `RactorMessage` when they are node-local.

pub mod names;
pub mod root;
