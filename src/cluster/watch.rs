//! The membership a node runs with: the cluster file read at start, then re-read live
//! (`../shared/CLUSTER.md` §3.2).
//!
//! - At start a file that is unreadable or invalid, or does not name this node, refuses the start with
//!   one line ([`Membership::load`]). Without a file (the default path absent) the node runs standalone.
//! - Afterwards the file is checked every `reload_interval` (its modification time and size, which
//!   survives editors that write a new file and rename it over the old one) and at SIGHUP. A file that
//!   fails validation is ignored with an error and `insights_cluster_config_valid 0`: the last good
//!   membership stays. A valid file is applied; if it no longer names this node, the node is **leaving**:
//!   it stops taking organizations and `/readyz` answers 503 so a load balancer drops it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::file::{self, ClusterFile, Mode, NodeEntry};
use crate::metrics::Metrics;

/// The membership this node runs with. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    me: String,
    path: Option<PathBuf>,
    mode: Mode,
    /// Whether the cluster port speaks TLS (else every member must be on loopback).
    tls: bool,
    state: RwLock<Loaded>,
    metrics: Metrics,
    changes: watch::Sender<u64>,
}

struct Loaded {
    /// The last good file.
    file: Arc<ClusterFile>,
    /// This node's entry: from the last good file that named it.
    entry: NodeEntry,
    /// The modification time and size of the file last read, good or not.
    stamp: Option<(SystemTime, u64)>,
    /// Whether the file last read was valid.
    valid: bool,
}

/// What a re-read found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// The file has not changed (or changed only in comments, spacing or order).
    Unchanged,
    /// A new membership applies.
    Applied {
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// The file is unreadable or invalid: the last good membership stays.
    Invalid(Vec<String>),
}

impl Membership {
    /// Reads the cluster file of `config` and decides this node's mode; the error is one line for the
    /// operator. `address` is the HTTPS listener, the address of a node without a file. Without cluster
    /// TLS (`config.tls`), a later edit that puts a member off loopback is refused like any invalid file.
    pub fn load(
        config: &crate::config::ClusterConfig,
        me: &str,
        cookie: Option<&str>,
        address: &str,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let tls = config.tls.is_some();
        let read = match &config.file {
            None => None,
            Some(path) => match read_file(path) {
                Ok(read) => Some((path.clone(), read)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !config.file_required => {
                    tracing::info!(path = %path.display(), "no cluster file: running standalone");
                    None
                }
                Err(e) => return Err(format!("cannot read the cluster file {}: {e}", path.display())),
            },
        };
        let (path, file, stamp) = match read {
            None => (None, None, None),
            Some((path, (text, stamp))) => {
                let file = file::parse(&text).map_err(|errors| {
                    format!(
                        "the cluster file {} is invalid: {}",
                        path.display(),
                        errors.join("; ")
                    )
                })?;
                (Some(path), Some(file), Some(stamp))
            }
        };
        let mode = file::decide(file.as_ref(), me, cookie)?;
        let file = file.unwrap_or_else(|| ClusterFile::standalone(me, address));
        let entry = file
            .node(me)
            .cloned()
            .ok_or_else(|| format!("node {me:?} is not in the cluster file"))?;
        metrics.cluster_config_valid.set(1);
        tracing::info!(node = me, mode = ?mode, members = file.nodes.len(), hash = %file.hash, "cluster membership loaded");
        Ok(Self {
            inner: Arc::new(Inner {
                me: me.to_owned(),
                path,
                mode,
                tls,
                state: RwLock::new(Loaded {
                    file: Arc::new(file),
                    entry,
                    stamp,
                    valid: true,
                }),
                metrics,
                changes: watch::Sender::new(0),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.inner.me
    }

    /// Whether the node runs standalone or joined to the file's other nodes (decided at start).
    pub fn mode(&self) -> &Mode {
        &self.inner.mode
    }

    /// The file this node reads, when it has one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The last good membership.
    pub fn file(&self) -> Arc<ClusterFile> {
        self.read().file.clone()
    }

    /// This node's entry (from the last good file that named it).
    pub fn entry(&self) -> NodeEntry {
        self.read().entry.clone()
    }

    /// The hash of the membership this node runs.
    pub fn hash(&self) -> String {
        self.read().file.hash.clone()
    }

    /// Whether the file last read was valid.
    pub fn valid(&self) -> bool {
        self.read().valid
    }

    /// Whether this node was removed from the file: it takes no more organizations and is not ready.
    pub fn leaving(&self) -> bool {
        self.read().file.node(&self.inner.me).is_none()
    }

    /// Changes each time a new membership applies.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Re-reads the file if it changed since the last read (or always, when `force`), and applies it
    /// if it is valid.
    pub fn reload(&self, force: bool) -> Reload {
        let Some(path) = &self.inner.path else {
            return Reload::Unchanged;
        };
        if !force
            && let Ok(stamp) = stat(path)
            && Some(stamp) == self.read().stamp
        {
            return Reload::Unchanged;
        }
        let outcome = match read_file(path) {
            Err(e) => self.invalid(None, vec![format!("cannot read it: {e}")]),
            Ok((text, stamp)) => match file::parse(&text) {
                Err(errors) => self.invalid(Some(stamp), errors),
                Ok(file) => self.apply(file, stamp),
            },
        };
        match &outcome {
            Reload::Unchanged => {}
            Reload::Applied { added, removed } => {
                tracing::info!(path = %path.display(), ?added, ?removed, hash = %self.hash(), leaving = self.leaving(), "cluster file applied");
                self.inner
                    .metrics
                    .cluster_config_reloads
                    .with_label_values(&["applied"])
                    .inc();
            }
            Reload::Invalid(errors) => {
                tracing::error!(path = %path.display(), errors = %errors.join("; "), "cluster file ignored: it is invalid; the last good membership stays");
                self.inner
                    .metrics
                    .cluster_config_reloads
                    .with_label_values(&["invalid"])
                    .inc();
            }
        }
        outcome
    }

    fn invalid(&self, stamp: Option<(SystemTime, u64)>, errors: Vec<String>) -> Reload {
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        state.stamp = stamp;
        state.valid = false;
        self.inner.metrics.cluster_config_valid.set(0);
        Reload::Invalid(errors)
    }

    fn apply(&self, file: ClusterFile, stamp: (SystemTime, u64)) -> Reload {
        if self.inner.mode == Mode::Standalone && file.nodes.len() > 1 {
            return self.invalid(
                Some(stamp),
                vec![format!(
                    "it lists {} nodes, but this node runs standalone (it started without INSIGHTS_CLUSTER_COOKIE): restart it with the cookie to join",
                    file.nodes.len()
                )],
            );
        }
        if self.inner.mode == Mode::Clustered
            && let Err(e) = super::transport::check(&file, self.inner.tls)
        {
            return self.invalid(Some(stamp), vec![e]);
        }
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        state.stamp = Some(stamp);
        state.valid = true;
        self.inner.metrics.cluster_config_valid.set(1);
        if file.hash == state.file.hash {
            return Reload::Unchanged;
        }
        if let Some(entry) = file.node(&self.inner.me) {
            if entry.address != state.entry.address {
                tracing::warn!(from = %state.entry.address, to = %entry.address, "this node's cluster address changed in the file: it takes effect at the next restart");
            }
            state.entry = NodeEntry {
                address: state.entry.address.clone(),
                ..entry.clone()
            };
        }
        let names = |f: &ClusterFile| f.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let (old, new) = (names(&state.file), names(&file));
        let added = new.iter().filter(|n| !old.contains(n)).cloned().collect();
        let removed = old.iter().filter(|n| !new.contains(n)).cloned().collect();
        state.file = Arc::new(file);
        drop(state);
        self.inner.changes.send_modify(|v| *v += 1);
        Reload::Applied { added, removed }
    }

    /// Re-reads the file every `interval` and at SIGHUP, until `shutdown`.
    pub fn spawn_watcher(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        if self.inner.path.is_none() {
            return;
        }
        let membership = self.clone();
        tokio::spawn(async move {
            let mut hangup = hangups();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    _ = next_hangup(&mut hangup) => true,
                    _ = shutdown.changed() => break,
                };
                // Reading the file is blocking I/O: off the async threads.
                let m = membership.clone();
                let _ = tokio::task::spawn_blocking(move || m.reload(force)).await;
            }
        });
    }
}

fn stat(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

fn read_file(path: &Path) -> std::io::Result<(String, (SystemTime, u64))> {
    let stamp = stat(path)?;
    let text = std::fs::read_to_string(path)?;
    Ok((text, stamp))
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the cluster file is still polled");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(h: &mut Hangups) {
    #[cfg(unix)]
    if let Some(s) = h {
        if s.recv().await.is_some() {
            return;
        }
        *h = None;
    }
    let _ = h;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> crate::config::ClusterConfig {
        crate::config::ClusterConfig {
            file: Some(path.to_owned()),
            file_required: true,
            ..crate::config::Config::default().cluster
        }
    }

    const COOKIE: &str = "0123456789abcdef0123456789abcdef";

    fn write(path: &Path, nodes: &[&str]) {
        let text: String = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[[node]]\nname = \"{n}\"\naddress = \"127.0.0.{}:4697\"\n", i + 1))
            .collect();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn edits_apply_invalid_files_keep_the_last_good_membership_and_removal_means_leaving() {
        let dir = std::env::temp_dir().join(format!("insights-watch-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        write(&path, &["a", "b"]);
        let metrics = Metrics::new().unwrap();
        let m = Membership::load(&config(&path), "a", Some(COOKIE), "x", metrics.clone()).unwrap();
        assert_eq!(m.mode(), &Mode::Clustered);
        assert_eq!(m.reload(false), Reload::Unchanged);
        let first = m.hash();

        write(&path, &["a", "b", "c"]);
        assert_eq!(
            m.reload(true),
            Reload::Applied {
                added: vec!["c".into()],
                removed: vec![]
            }
        );
        assert_ne!(m.hash(), first);
        assert_eq!(metrics.cluster_config_valid.get(), 1);

        std::fs::write(&path, "[[node]]\nname = \"a\"\n").unwrap();
        assert!(matches!(m.reload(true), Reload::Invalid(_)));
        assert_eq!(metrics.cluster_config_valid.get(), 0);
        assert_eq!(
            m.file().names(),
            ["a", "b", "c"],
            "the last good membership stays"
        );

        write(&path, &["b", "c"]);
        assert!(matches!(m.reload(true), Reload::Applied { .. }));
        assert!(m.leaving());
        assert_eq!(m.entry().name, "a", "its entry is remembered");
        assert_eq!(metrics.cluster_config_valid.get(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_start_refuses_a_missing_named_file_and_a_node_not_in_the_file() {
        let dir = std::env::temp_dir().join(format!("insights-watch-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        let metrics = Metrics::new().unwrap();
        let err = Membership::load(&config(&path), "a", None, "x", metrics.clone())
            .err()
            .unwrap();
        assert!(err.contains("cannot read the cluster file"), "{err}");
        let default = crate::config::ClusterConfig {
            file: Some(path.clone()),
            file_required: false,
            ..config(&path)
        };
        let m = Membership::load(&default, "a", None, "127.0.0.1:8443", metrics.clone()).unwrap();
        assert_eq!(m.mode(), &Mode::Standalone);
        assert_eq!(m.hash(), "standalone");
        write(&path, &["a", "b"]);
        let err = Membership::load(&config(&path), "z", Some(COOKIE), "x", metrics.clone())
            .err()
            .unwrap();
        assert!(
            err.contains("\"z\"") && err.contains("not in the cluster file"),
            "{err}"
        );
        let err = Membership::load(&config(&path), "a", None, "x", metrics)
            .err()
            .unwrap();
        assert!(err.contains("INSIGHTS_CLUSTER_COOKIE"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
