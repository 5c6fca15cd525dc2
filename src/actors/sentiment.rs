//! The sentiment service of a node: the ML pool behind the prediction cache (R3, R8.12, R14.6, R14.9).
//! HTTP predictions and the scoring pipeline both score through it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::ml_pool::{MlPool, PoolSettings};
use crate::config::MlConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::ml::model::{MODEL_NAME, Scores, SentimentModel};
use crate::ml::{ModelStatus, Prediction, cache_key, preprocess};
use crate::store::cache::Cache;

/// The sentiment service of a node.
#[derive(Clone)]
pub struct Ml {
    pool: Option<MlPool>,
    status: ModelStatus,
    cache: Cache,
    metrics: Metrics,
    pub(crate) config: MlConfig,
}

impl Ml {
    /// Loads one session per worker from `model_dir` and starts the pool. A model that cannot be loaded
    /// stops the start-up with the reason, unless `ml.required` is false.
    pub async fn start(
        config: &MlConfig,
        model_dir: &Path,
        cache: Cache,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let disabled = |status: &'static str, error: Option<String>| Self {
            pool: None,
            status: ModelStatus {
                status,
                model: MODEL_NAME,
                error,
            },
            cache: cache.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
        };
        if !config.enabled {
            return Ok(disabled("disabled", None));
        }
        let started = Instant::now();
        let loaded = {
            let (dir, library, workers, threads) = (
                model_dir.to_owned(),
                config.ort_library.clone(),
                config.workers,
                config.threads_per_worker,
            );
            tokio::task::spawn_blocking(move || {
                (0..workers)
                    .map(|_| SentimentModel::load(&dir, library.as_deref(), threads).map(Arc::new))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
        };
        let models = match loaded {
            Ok(models) => models,
            Err(e) if config.required => {
                anyhow::bail!(
                    "cannot load the sentiment model: {e} (set INSIGHTS_ML_REQUIRED=false to start without scoring)"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "sentiment model not loaded; the node runs without scoring");
                return Ok(disabled("down", Some(e.to_string())));
            }
        };
        let settings = PoolSettings {
            max_batch: config.max_batch,
            gather_window: config.gather_window,
            call_timeout: config.call_timeout,
        };
        let pool = MlPool::start(models, settings, metrics.clone()).await?;
        tracing::info!(
            model = MODEL_NAME,
            workers = config.workers,
            load_ms = started.elapsed().as_millis() as u64,
            "sentiment model loaded"
        );
        Ok(Self {
            pool: Some(pool),
            status: ModelStatus {
                status: "up",
                model: MODEL_NAME,
                error: None,
            },
            cache,
            metrics,
            config: config.clone(),
        })
    }

    /// The model's state; `down` once the pool has stopped.
    pub fn status(&self) -> ModelStatus {
        match &self.pool {
            Some(pool) if !pool.is_running() => ModelStatus {
                status: "down",
                model: MODEL_NAME,
                error: Some("the ML pool stopped".to_owned()),
            },
            _ => self.status.clone(),
        }
    }

    /// Stops the pool (node shutdown); later predictions answer 503.
    pub fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.stop();
        }
    }

    /// Tells whether the model is loaded and its pool running.
    pub fn is_up(&self) -> bool {
        self.pool.as_ref().is_some_and(MlPool::is_running)
    }

    /// Tells whether a missing model must make the node unready.
    pub fn required(&self) -> bool {
        self.config.enabled && self.config.required
    }

    /// Scores texts, from the cache where possible (key `ml:{model}:{sha256(preprocessed text)}`, R14.9).
    pub async fn predict(&self, texts: &[String]) -> Result<Vec<Prediction>, Error> {
        let pool = self
            .pool
            .as_ref()
            .filter(|p| p.is_running())
            .ok_or(Error::Unavailable("sentiment model"))?;
        let started = Instant::now();
        let prepared: Vec<String> = texts.iter().map(|t| preprocess::preprocess(t)).collect();
        let keys: Vec<String> = prepared.iter().map(|t| cache_key(t)).collect();
        let cached = self.cache.get_many(&keys).await;
        let mut results: Vec<Option<Prediction>> = cached
            .iter()
            .map(|hit| {
                hit.as_deref()
                    .and_then(|json| serde_json::from_str::<Scores>(json).ok())
                    .map(|s| Prediction::from_scores(s, true))
            })
            .collect();
        let misses: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_none()).collect();
        self.metrics
            .ml_cache
            .with_label_values(&["hit"])
            .inc_by((results.len() - misses.len()) as u64);
        self.metrics
            .ml_cache
            .with_label_values(&["miss"])
            .inc_by(misses.len() as u64);
        let unavailable = |e: String| {
            tracing::error!(error = %e, "sentiment scoring failed");
            Error::Unavailable("sentiment model")
        };
        let scored: Vec<Scores> = if misses.len() == 1 {
            vec![
                pool.score_one(prepared[misses[0]].clone())
                    .await
                    .map_err(unavailable)?,
            ]
        } else {
            let mut all = Vec::with_capacity(misses.len());
            for chunk in misses.chunks(self.config.max_batch) {
                let texts = chunk.iter().map(|i| prepared[*i].clone()).collect();
                all.extend(
                    pool.score_batch(texts, self.config.call_timeout)
                        .await
                        .map_err(unavailable)?,
                );
            }
            all
        };
        for (i, scores) in misses.into_iter().zip(scored) {
            if let Ok(json) = serde_json::to_string(&scores) {
                self.cache.set(&keys[i], &json, self.config.cache_ttl).await;
            }
            results[i] = Some(Prediction::from_scores(scores, false));
        }
        let elapsed = started.elapsed();
        self.metrics.ml_latency.observe(elapsed.as_secs_f64());
        if elapsed > self.config.slow_threshold {
            tracing::warn!(
                elapsed_ms = elapsed.as_millis() as u64,
                texts = texts.len(),
                "sentiment prediction slow"
            );
        }
        results
            .into_iter()
            .map(|r| r.ok_or(Error::Unavailable("sentiment model")))
            .collect()
    }
}
