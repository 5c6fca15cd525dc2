//! Integration tests: each test starts a real node (HTTPS, actors, PostgreSQL, Redis) on a database of
//! its own, so tests run in parallel and in any order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod auth;
mod batch;
mod cli;
mod cluster;
mod cluster_lease;
mod cluster_nodes;
mod contract;
mod customers;
mod demo;
mod errors;
mod health;
mod helpers;
mod hostile;
mod import;
mod ingest;
mod insights;
mod limits;
mod listing;
mod live;
mod ml;
mod openapi;
mod ownership;
mod patterns;
mod procs;
mod roles;
mod rollups;
mod schema;
mod sealed;
mod secrets;
mod security_events;
mod tls;
mod two_nodes;
mod users;
