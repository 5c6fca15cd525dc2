//! The sentiment model: an ONNX graph (MiniLM encoder, mean pooling, linear head, softmax; see
//! `models/MODEL.md`) run by ONNX Runtime, which is loaded at run time from the shared library of the
//! PyPI `onnxruntime` wheel, and the tokenizer it was trained with.
//!
//! Scoring is blocking CPU work: callers run it on a blocking thread. One text runs per `Session::run`,
//! because the graph's dynamic int8 quantization makes a text's scores depend on the other texts of a
//! padded batch; one at a time, a text always gets the same scores.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use tokenizers::Tokenizer;

/// The file names inside the model directory.
pub const MODEL_FILE: &str = "sentiment-minilm-v1.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The model's name and version, as reported with every prediction and used in cache keys.
pub const MODEL_NAME: &str = "sentiment-minilm-v1";

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found: {0} (set ORT_DYLIB_PATH to libonnxruntime.so from the PyPI onnxruntime wheel)"
    )]
    Runtime(String),
    #[error("model file {path} cannot be loaded: {message}")]
    Model { path: PathBuf, message: String },
    #[error("tokenizer {path} cannot be loaded: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

pub use crate::domain::sentiment::Scores;

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process, from `ORT_DYLIB_PATH` or the given path.
fn environment(library: Option<&Path>) -> Result<&'static ort::environment::Environment, ModelError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = library
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .ok_or_else(|| "no library path given and ORT_DYLIB_PATH is not set".to_owned())?;
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
        ort::init_from(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .with_name("insights")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|e| ModelError::Runtime(e.clone()))
}

/// A loaded model: one ONNX Runtime session and the tokenizer.
pub struct SentimentModel {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
}

impl SentimentModel {
    /// Loads `MODEL_FILE` and `TOKENIZER_FILE` from `dir`, using `threads` intra-op threads.
    pub fn load(dir: &Path, library: Option<&Path>, threads: usize) -> Result<Self, ModelError> {
        let env = environment(library)?;
        let model_path = dir.join(MODEL_FILE);
        let model_err = |message: String| ModelError::Model {
            path: model_path.clone(),
            message,
        };
        if !model_path.exists() {
            return Err(model_err("file does not exist".to_owned()));
        }
        let session = Session::builder(env)
            .map_err(|e| model_err(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| model_err(e.to_string()))?
            .commit_from_file(&model_path)
            .map_err(|e| model_err(e.to_string()))?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::Tokenizer {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
        })
    }

    /// Returns the token ids of an already preprocessed text.
    pub fn token_ids(&self, preprocessed: &str) -> Result<Vec<i64>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(preprocessed, true)
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Scores one already preprocessed text. Blocking: call it off the async threads.
    pub fn score(&self, preprocessed: &str) -> Result<Scores, ModelError> {
        let ids = self.token_ids(preprocessed)?;
        let len = ids.len();
        let mask = vec![1i64; len];
        let inference = |e: ort::Error| ModelError::Inference(e.to_string());
        let input_ids = Tensor::from_array(([1usize, len], ids)).map_err(inference)?;
        let attention_mask = Tensor::from_array(([1usize, len], mask)).map_err(inference)?;
        // The lock guards the session's run state; a poisoned lock only means an earlier run panicked.
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs!["input_ids" => input_ids, "attention_mask" => attention_mask])
            .map_err(inference)?;
        let (_, probs) = outputs["probs"].try_extract_tensor::<f32>().map_err(inference)?;
        match probs {
            [positive, negative, neutral] => Ok(Scores {
                positive: *positive,
                negative: *negative,
                neutral: *neutral,
            }),
            other => Err(ModelError::Inference(format!(
                "expected 3 probabilities, got {}",
                other.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_confidence_and_score_follow_the_probabilities() {
        let s = Scores {
            positive: 0.7,
            negative: 0.1,
            neutral: 0.2,
        };
        assert_eq!(s.label(), "positive");
        assert!((s.confidence() - 0.7).abs() < 1e-6);
        assert!((s.score() - 0.6).abs() < 1e-6);
        assert_eq!(
            Scores {
                positive: 0.1,
                negative: 0.5,
                neutral: 0.4
            }
            .label(),
            "negative"
        );
        assert_eq!(
            Scores {
                positive: 0.1,
                negative: 0.2,
                neutral: 0.7
            }
            .label(),
            "neutral"
        );
    }

    #[test]
    fn a_missing_runtime_library_is_a_clear_error() {
        // Only meaningful when no other test loaded the runtime first in this process.
        if ENVIRONMENT.get().is_none() {
            let err = environment(Some(Path::new("/nonexistent/libonnxruntime.so")))
                .map(|_| ())
                .unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err}");
        }
    }
}
