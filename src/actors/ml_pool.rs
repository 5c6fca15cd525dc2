//! The ML pool: a ractor factory of workers, each owning its own ONNX Runtime session, and a batcher in
//! front of it that gathers single texts into batches of up to `max_batch` for a short window (R15.7).
//!
//! Workers run inference on the blocking pool, never on the async threads. A crashed worker is replaced
//! by the factory with the same session; its job's caller gets an error and may retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::factory::{
    Factory, FactoryArguments, FactoryMessage, FactoryRef, Job, Worker, WorkerId, queues, routing,
    worker_builder,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::{mpsc, oneshot};

use crate::domain::Wire;
use crate::ml::model::{Scores, SentimentModel};

/// Jobs of the pool; cluster-ready, so a node without a model could ask one that has it.
#[derive(RactorMessage)]
pub enum MlJob {
    /// Scores preprocessed texts, in order.
    Score(Wire<Vec<String>>, RpcReplyPort<Wire<Vec<Scores>>>),
}

/// A worker of the pool.
pub struct MlWorker;

/// What a worker starts with: its own session.
pub struct MlWorkerArgs(pub Arc<SentimentModel>);

impl ractor::Message for MlWorkerArgs {}

impl Worker for MlWorker {
    type Key = ();
    type Message = MlJob;
    type State = Arc<SentimentModel>;
    type Arguments = MlWorkerArgs;

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), MlJob>>,
        args: MlWorkerArgs,
    ) -> Result<Arc<SentimentModel>, ActorProcessingErr> {
        Ok(args.0)
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), MlJob>>,
        Job { msg, .. }: Job<(), MlJob>,
        model: &mut Arc<SentimentModel>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MlJob::Score(Wire(texts), reply) => {
                let result = match texts {
                    Ok(texts) => {
                        let model = model.clone();
                        tokio::task::spawn_blocking(move || {
                            texts
                                .iter()
                                .map(|t| model.score(t).map_err(|e| e.to_string()))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("inference task failed: {e}")))
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(Wire(result));
            }
        }
        Ok(())
    }
}

/// A running pool and its batcher.
#[derive(Clone)]
pub struct MlPool {
    factory: FactoryRef<(), MlJob>,
    requests: mpsc::Sender<(String, oneshot::Sender<Result<Scores, String>>)>,
    metrics: crate::metrics::Metrics,
}

/// How the pool gathers and runs work.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_batch: usize,
    pub gather_window: Duration,
    pub call_timeout: Duration,
}

impl MlPool {
    /// Starts a factory with one worker per model (each model owns a session) and the batcher.
    pub async fn start(
        models: Vec<Arc<SentimentModel>>,
        settings: PoolSettings,
        metrics: crate::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        let workers = models.len().max(1);
        let factory_def = Factory::<
            (),
            MlJob,
            MlWorkerArgs,
            MlWorker,
            routing::QueuerRouting<(), MlJob>,
            queues::DefaultQueue<(), MlJob>,
        >::default();
        let args = FactoryArguments::builder()
            .worker_builder(Box::new(worker_builder(move |wid: WorkerId| {
                (MlWorker, MlWorkerArgs(models[wid % models.len()].clone()))
            })))
            .queue(Default::default())
            .router(Default::default())
            .num_initial_workers(workers)
            .build();
        let (factory, _) = Actor::spawn(None, factory_def, args).await?;
        let (requests, rx) = mpsc::channel(settings.max_batch * 64);
        tokio::spawn(batcher(rx, factory.clone(), workers, settings, metrics.clone()));
        Ok(Self {
            factory,
            requests,
            metrics,
        })
    }

    /// Scores texts as one job (already batched by the caller).
    pub async fn score_batch(&self, texts: Vec<String>, timeout: Duration) -> Result<Vec<Scores>, String> {
        self.metrics.ml_batch_size.observe(texts.len() as f64);
        run_job(&self.factory, texts, timeout).await
    }

    /// Scores one text, batched with whatever other texts arrive within the gathering window.
    pub async fn score_one(&self, text: String) -> Result<Scores, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((text, tx))
            .await
            .map_err(|_| "ML batcher stopped".to_owned())?;
        rx.await
            .map_err(|_| "ML batcher dropped the request".to_owned())?
    }

    /// Tells whether the factory is up (it reports `Starting` until its first message is handled).
    pub fn is_running(&self) -> bool {
        matches!(
            self.factory.get_status(),
            ractor::ActorStatus::Starting | ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }

    /// Stops the pool.
    pub fn stop(&self) {
        self.factory.stop(None);
    }
}

async fn run_job(
    factory: &FactoryRef<(), MlJob>,
    texts: Vec<String>,
    timeout: Duration,
) -> Result<Vec<Scores>, String> {
    let call = factory
        .call_job((), |reply| MlJob::Score(Wire::new(texts), reply), Some(timeout))
        .await
        .map_err(|e| format!("ML pool unreachable: {e}"))?;
    match call {
        CallResult::Success(Wire(result)) => result,
        CallResult::Timeout => Err("ML pool did not answer in time".to_owned()),
        CallResult::SenderError => Err("ML worker stopped before answering".to_owned()),
    }
}

/// Gathers single requests into batches. A batch goes out as soon as a worker is free: while every
/// worker is busy, requests accumulate and the next batch takes up to `max_batch` of them (so batches
/// grow with load by themselves); once a worker is free, the batcher waits at most `gather_window` for
/// more texts. Each batch is one factory job, awaited on its own task.
async fn batcher(
    mut rx: mpsc::Receiver<(String, oneshot::Sender<Result<Scores, String>>)>,
    factory: FactoryRef<(), MlJob>,
    workers: usize,
    settings: PoolSettings,
    metrics: crate::metrics::Metrics,
) {
    let free = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
    let depth = metrics.ml_queue_depth.with_label_values(&["predictions"]);
    while let Some(first) = rx.recv().await {
        depth.set(rx.len() as i64 + 1);
        let Ok(permit) = free.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + settings.gather_window;
        while batch.len() < settings.max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        _ => break,
                    }
                }
            }
        }
        depth.set(rx.len() as i64);
        metrics.ml_batch_size.observe(batch.len() as f64);
        let factory = factory.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (texts, replies): (Vec<String>, Vec<_>) = batch.into_iter().unzip();
            match run_job(&factory, texts, settings.call_timeout).await {
                Ok(scores) => {
                    for (reply, s) in replies.into_iter().zip(scores) {
                        let _ = reply.send(Ok(s));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
