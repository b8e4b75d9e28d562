//! Trainable heads: a small classifier over a frozen backbone's embeddings (a linear softmax
//! layer, optionally after one hidden ReLU layer), trained with candle (AdamW on the
//! cross-entropy loss), versioned, and persisted as one safetensors file holding the weights
//! and, in its metadata, everything needed to trust them (classes, examples, validation,
//! parent, training time, the backbone's hash).
//!
//! The same `forward` runs in training and at inference, so a head computes exactly what it
//! was validated with. Embeddings are standardised with the training set's mean and spread,
//! stored with the head.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use tessera_operators::Classification;
pub use tessera_operators::learning::Validation;
use tessera_operators::scopes::GLOBAL_SCOPE;

use crate::error::ModelError;

/// Format of the metadata, bumped when it changes incompatibly.
pub const HEAD_FORMAT: u32 = 1;
/// The safetensors metadata key holding [`HeadMeta`] as JSON.
const META_KEY: &str = "tessera.head";

fn global_scope() -> String {
    GLOBAL_SCOPE.to_owned()
}

/// What a head is, besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    /// Monotonic version (1 for the first head).
    pub version: u64,
    /// The live head this one was trained to replace, if any.
    pub parent: Option<u64>,
    /// For a rollback: the earlier version whose weights this one carries.
    #[serde(default)]
    pub restored_from: Option<u64>,
    /// The cameras it serves: `global`, or a camera group's name. Versions count per scope.
    #[serde(default = "global_scope")]
    pub scope: String,
    /// Class names, indexed by output.
    pub classes: Vec<String>,
    /// Training examples of each class, indexed like `classes`.
    pub examples_per_class: Vec<usize>,
    /// Validation on the held-out split the promotion decision used.
    pub validation: Validation,
    /// When training finished, milliseconds since the Unix epoch.
    pub trained_at_ms: u64,
    /// `sha256:<hex>` of the backbone's ONNX file.
    pub backbone: String,
    /// Size of the embeddings the head reads.
    pub embedding_dim: usize,
    /// Units of the hidden layer; `None`: linear.
    pub hidden: Option<usize>,
    /// [`HEAD_FORMAT`] of the writer.
    pub format: u32,
}

/// How a head is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Full-batch optimisation steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Units of a hidden ReLU layer; `None`: a linear softmax classifier.
    pub hidden: Option<usize>,
    /// Seed of the initial weights (training is deterministic for a seed and a data order).
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 150,
            learning_rate: 0.01,
            weight_decay: 1e-4,
            hidden: None,
            seed: 0x07e5_5e7a,
        }
    }
}

/// A labelled embedding.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    pub embedding: &'a [f32],
    /// Index into the class list the head is trained for.
    pub class: usize,
}

/// The network: standardisation, then the layers.
#[derive(Debug, Clone)]
struct Net {
    mean: Tensor,
    scale: Tensor,
    /// (weight [out, in], bias [out]) per layer; ReLU between layers.
    layers: Vec<(Tensor, Tensor)>,
}

impl Net {
    /// Logits `[n, classes]` of embeddings `[n, dim]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let standardised = x.broadcast_sub(&self.mean)?.broadcast_mul(&self.scale)?;
        layers_forward(&self.layers, standardised)
    }
}

/// The layers on standardised inputs: affine, then ReLU before every later layer.
fn layers_forward(layers: &[(Tensor, Tensor)], mut h: Tensor) -> candle_core::Result<Tensor> {
    for (index, (weight, bias)) in layers.iter().enumerate() {
        if index > 0 {
            h = h.relu()?;
        }
        h = h.matmul(&weight.t()?)?.broadcast_add(bias)?;
    }
    Ok(h)
}

/// A trained head, ready to classify embeddings.
#[derive(Debug, Clone)]
pub struct Head {
    meta: HeadMeta,
    net: Net,
}

impl Head {
    /// Trains a head for `classes` on `examples` (embeddings of `embedding_dim` values). The
    /// caller fills in `meta`'s version, parent, validation and backbone; the examples per
    /// class and the training time are counted here.
    pub fn train(
        classes: Vec<String>,
        examples: &[Example<'_>],
        embedding_dim: usize,
        backbone: String,
        settings: &TrainSettings,
    ) -> Result<Head, ModelError> {
        let invalid = |message: String| ModelError::InvalidHead {
            message,
            source: None,
        };
        if classes.len() < 2 {
            return Err(invalid(format!(
                "a head needs at least 2 classes, got {}",
                classes.len()
            )));
        }
        if examples.is_empty() || embedding_dim == 0 {
            return Err(invalid("no training examples".into()));
        }
        let mut examples_per_class = vec![0usize; classes.len()];
        let mut inputs = Vec::with_capacity(examples.len() * embedding_dim);
        let mut targets = Vec::with_capacity(examples.len());
        for example in examples {
            if example.embedding.len() != embedding_dim {
                return Err(invalid(format!(
                    "an example has {} values, the head reads {embedding_dim}",
                    example.embedding.len()
                )));
            }
            let Some(count) = examples_per_class.get_mut(example.class) else {
                return Err(invalid(format!(
                    "an example has class {}, the head has {}",
                    example.class,
                    classes.len()
                )));
            };
            *count += 1;
            inputs.extend_from_slice(example.embedding);
            targets.push(example.class as u32);
        }
        let compute = |context| move |source| ModelError::HeadCompute { context, source };
        let net = fit(&inputs, &targets, embedding_dim, classes.len(), settings)
            .map_err(compute("training"))?;
        let meta = HeadMeta {
            version: 0,
            parent: None,
            restored_from: None,
            scope: GLOBAL_SCOPE.to_owned(),
            classes,
            examples_per_class,
            validation: Validation::default(),
            trained_at_ms: now_ms(),
            backbone,
            embedding_dim,
            hidden: settings.hidden,
            format: HEAD_FORMAT,
        };
        Ok(Head { meta, net })
    }

    pub fn meta(&self) -> &HeadMeta {
        &self.meta
    }

    /// Sets version, parent and validation once they are known (before persisting).
    pub fn meta_mut(&mut self) -> &mut HeadMeta {
        &mut self.meta
    }

    pub fn version(&self) -> u64 {
        self.meta.version
    }

    /// `global`, or the camera group it serves.
    pub fn scope(&self) -> &str {
        &self.meta.scope
    }

    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// Class probabilities, `[n][classes]`, of `n` embeddings laid out one after another.
    pub fn probabilities(&self, embeddings: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let dim = self.meta.embedding_dim;
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        if !embeddings.len().is_multiple_of(dim) {
            return Err(ModelError::Shape(format!(
                "{} embedding values are not a multiple of the head's {dim}",
                embeddings.len()
            )));
        }
        let n = embeddings.len() / dim;
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let x = Tensor::from_slice(embeddings, (n, dim), &Device::Cpu)?;
            candle_nn::ops::softmax(&self.net.forward(&x)?, D::Minus1)?.to_vec2::<f32>()
        };
        run().map_err(|source| ModelError::HeadCompute {
            context: "classifying",
            source,
        })
    }

    /// The best `top_k` classes of each of `n` embeddings, best first (class ids index
    /// [`Self::classes`]).
    pub fn classify(
        &self,
        embeddings: &[f32],
        top_k: usize,
    ) -> Result<Vec<Vec<Classification>>, ModelError> {
        Ok(self
            .probabilities(embeddings)?
            .into_iter()
            .map(|p| top_classes(&p, top_k))
            .collect())
    }

    /// The best class of each embedding.
    pub fn predict(&self, embeddings: &[f32]) -> Result<Vec<usize>, ModelError> {
        Ok(self
            .probabilities(embeddings)?
            .iter()
            .map(|p| top_classes(p, 1).first().map_or(0, |c| c.class_id as usize))
            .collect())
    }

    /// Refuses a head trained on another backbone or for another embedding size.
    pub fn check_backbone(&self, backbone: &str, embedding_dim: usize) -> Result<(), ModelError> {
        let mismatch = |reason| ModelError::HeadMismatch {
            version: self.meta.version,
            reason,
        };
        if self.meta.backbone != backbone {
            return Err(mismatch(format!(
                "it was trained on backbone {}, the loaded model is {backbone}; train a new head on this backbone or load the model it was trained on",
                self.meta.backbone
            )));
        }
        if self.meta.embedding_dim != embedding_dim {
            return Err(mismatch(format!(
                "it reads {}-d embeddings, the model gives {embedding_dim}",
                self.meta.embedding_dim
            )));
        }
        Ok(())
    }

    /// The head as one safetensors file: weights, metadata under `tessera.head`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let meta = serde_json::to_string(&self.meta).map_err(|e| ModelError::InvalidHead {
            message: "encoding the metadata".into(),
            source: Some(Box::new(e)),
        })?;
        let mut tensors: Vec<(String, &Tensor)> = vec![
            ("norm.mean".into(), &self.net.mean),
            ("norm.scale".into(), &self.net.scale),
        ];
        for (index, (weight, bias)) in self.net.layers.iter().enumerate() {
            tensors.push((format!("layer{index}.weight"), weight));
            tensors.push((format!("layer{index}.bias"), bias));
        }
        let info = HashMap::from([(META_KEY.to_owned(), meta)]);
        safetensors::serialize(tensors, Some(info)).map_err(|e| ModelError::InvalidHead {
            message: "encoding the weights".into(),
            source: Some(Box::new(e)),
        })
    }

    /// Reads a head written by [`Self::to_bytes`], checking that its tensors fit its metadata.
    pub fn from_bytes(bytes: &[u8]) -> Result<Head, ModelError> {
        let invalid = |message: String| ModelError::InvalidHead {
            message,
            source: None,
        };
        let wrap = |message: &str| {
            let message = message.to_owned();
            move |e: safetensors::SafeTensorError| ModelError::InvalidHead {
                message,
                source: Some(Box::new(e)),
            }
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(wrap("reading the safetensors header"))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| invalid(format!("no `{META_KEY}` metadata: not a tessera head")))?;
        let meta: HeadMeta =
            serde_json::from_str(meta_json).map_err(|e| ModelError::InvalidHead {
                message: "reading the metadata".into(),
                source: Some(Box::new(e)),
            })?;
        if meta.format > HEAD_FORMAT {
            return Err(invalid(format!(
                "format {} is newer than this tessera's {HEAD_FORMAT}",
                meta.format
            )));
        }
        let mut tensors =
            candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|source| {
                ModelError::HeadCompute {
                    context: "reading the weights",
                    source,
                }
            })?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, ModelError> {
            let tensor = tensors
                .remove(name)
                .ok_or_else(|| invalid(format!("tensor `{name}` missing")))?;
            if tensor.dims() != shape || tensor.dtype() != DType::F32 {
                return Err(invalid(format!(
                    "tensor `{name}` is {:?} {:?}, expected f32 {shape:?}",
                    tensor.dtype(),
                    tensor.dims()
                )));
            }
            Ok(tensor)
        };
        let dim = meta.embedding_dim;
        let classes = meta.classes.len();
        if classes < 2 || meta.examples_per_class.len() != classes {
            return Err(invalid(format!(
                "{classes} classes with {} example counts",
                meta.examples_per_class.len()
            )));
        }
        let mean = take("norm.mean", &[dim])?;
        let scale = take("norm.scale", &[dim])?;
        let sizes: Vec<usize> = match meta.hidden {
            Some(hidden) => vec![dim, hidden, classes],
            None => vec![dim, classes],
        };
        let mut layers = Vec::new();
        for (index, io) in sizes.windows(2).enumerate() {
            layers.push((
                take(&format!("layer{index}.weight"), &[io[1], io[0]])?,
                take(&format!("layer{index}.bias"), &[io[1]])?,
            ));
        }
        Ok(Head {
            meta,
            net: Net {
                mean,
                scale,
                layers,
            },
        })
    }

    /// Writes the head to `path` atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let partial = path.with_extension("partial");
        std::fs::write(&partial, self.to_bytes()?).map_err(io)?;
        std::fs::rename(&partial, path).map_err(io)
    }

    /// Reads a head saved with [`Self::save`].
    pub fn load(path: &Path) -> Result<Head, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

/// The best `k` classes of one probability vector, best first (ties: lower class first).
fn top_classes(probabilities: &[f32], k: usize) -> Vec<Classification> {
    let mut ranked: Vec<Classification> = probabilities
        .iter()
        .enumerate()
        .map(|(class, &score)| Classification {
            class_id: class as u32,
            score,
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
    });
    ranked.truncate(k);
    ranked
}

/// Full-batch AdamW on the cross-entropy of `targets`.
fn fit(
    inputs: &[f32],
    targets: &[u32],
    dim: usize,
    classes: usize,
    settings: &TrainSettings,
) -> candle_core::Result<Net> {
    let device = Device::Cpu;
    let n = targets.len();
    let x = Tensor::from_slice(inputs, (n, dim), &device)?;
    let y = Tensor::from_slice(targets, n, &device)?;
    // Standardise each dimension; a constant one (a dead ReLU channel) is left unscaled.
    let mean = x.mean(0)?;
    let spread = x.broadcast_sub(&mean)?.sqr()?.mean(0)?.sqrt()?;
    let scale = spread
        .ge(1e-6)?
        .where_cond(&spread.recip()?, &spread.ones_like()?)?;

    let mut rng = SplitMix64(settings.seed);
    let sizes: Vec<usize> = match settings.hidden {
        Some(hidden) => vec![dim, hidden.max(1), classes],
        None => vec![dim, classes],
    };
    let mut vars = Vec::new();
    for (index, io) in sizes.windows(2).enumerate() {
        let (fan_in, fan_out) = (io[0], io[1]);
        // He-uniform for a layer followed by a ReLU; the output layer starts at zero (a
        // linear head's loss is convex, so its start does not matter).
        let last = index + 2 == sizes.len();
        let bound = if last {
            0.0
        } else {
            (6.0 / fan_in as f64).sqrt()
        };
        let init: Vec<f32> = (0..fan_out * fan_in)
            .map(|_| ((rng.next_unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let weight = Var::from_tensor(&Tensor::from_vec(init, (fan_out, fan_in), &device)?)?;
        let bias = Var::zeros(fan_out, DType::F32, &device)?;
        vars.push((weight, bias));
    }
    let params = ParamsAdamW {
        lr: settings.learning_rate,
        weight_decay: settings.weight_decay,
        ..ParamsAdamW::default()
    };
    let all: Vec<Var> = vars
        .iter()
        .flat_map(|(w, b)| [w.clone(), b.clone()])
        .collect();
    let mut optimizer = AdamW::new(all, params)?;
    let standardised = x.broadcast_sub(&mean)?.broadcast_mul(&scale)?;
    let layers: Vec<(Tensor, Tensor)> = vars
        .iter()
        .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone()))
        .collect();
    for _ in 0..settings.steps {
        let logits = layers_forward(&layers, standardised.clone())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        optimizer.backward_step(&loss)?;
    }
    Ok(Net {
        mean,
        scale,
        layers: vars
            .iter()
            .map(|(w, b)| (w.as_tensor().detach(), b.as_tensor().detach()))
            .collect(),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A small, seedable generator for the initial weights (deterministic training).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const DIM: usize = 16;

    /// Blobs around a different corner per class, with deterministic noise.
    fn blobs(classes: usize, per_class: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let mut embeddings = Vec::new();
        let mut labels = Vec::new();
        for class in 0..classes {
            for _ in 0..per_class {
                let e = (0..DIM)
                    .map(|d| {
                        let centre = if d % classes == class { 3.0 } else { 0.5 };
                        centre + (rng.next_unit() as f32 - 0.5) * 1.5
                    })
                    .collect();
                embeddings.push(e);
                labels.push(class);
            }
        }
        (embeddings, labels)
    }

    fn examples<'a>(embeddings: &'a [Vec<f32>], labels: &[usize]) -> Vec<Example<'a>> {
        embeddings
            .iter()
            .zip(labels)
            .map(|(e, &class)| Example {
                embedding: e,
                class,
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class-{i}")).collect()
    }

    fn accuracy(head: &Head, embeddings: &[Vec<f32>], labels: &[usize]) -> Result<f32, ModelError> {
        let flat: Vec<f32> = embeddings.concat();
        let predicted = head.predict(&flat)?;
        let hits = predicted.iter().zip(labels).filter(|(p, t)| p == t).count();
        Ok(hits as f32 / labels.len() as f32)
    }

    #[test]
    fn a_linear_head_learns_separable_classes() -> TestResult {
        let (train, train_labels) = blobs(4, 40, 1);
        let (test, test_labels) = blobs(4, 40, 2);
        let head = Head::train(
            names(4),
            &examples(&train, &train_labels),
            DIM,
            "sha256:test".into(),
            &TrainSettings::default(),
        )?;
        assert_eq!(head.meta().examples_per_class, vec![40; 4]);
        let accuracy = accuracy(&head, &test, &test_labels)?;
        assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
        let probabilities = head.probabilities(&test[0])?;
        assert_eq!(probabilities[0].len(), 4);
        assert!((probabilities[0].iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let top = head.classify(&test[0], 2)?;
        assert_eq!(top[0].len(), 2);
        assert!(top[0][0].score >= top[0][1].score);
        Ok(())
    }

    #[test]
    fn a_head_with_a_hidden_layer_learns_too() -> TestResult {
        let (train, train_labels) = blobs(3, 40, 3);
        let (test, test_labels) = blobs(3, 30, 4);
        let settings = TrainSettings {
            hidden: Some(32),
            ..TrainSettings::default()
        };
        let head = Head::train(
            names(3),
            &examples(&train, &train_labels),
            DIM,
            "sha256:test".into(),
            &settings,
        )?;
        let accuracy = accuracy(&head, &test, &test_labels)?;
        assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
        let back = Head::from_bytes(&head.to_bytes()?)?;
        assert_eq!(back.meta().hidden, Some(32));
        assert_eq!(back.predict(&test.concat())?, head.predict(&test.concat())?);
        Ok(())
    }

    #[test]
    fn training_is_deterministic() -> TestResult {
        let (train, labels) = blobs(3, 20, 5);
        let train_once = || {
            Head::train(
                names(3),
                &examples(&train, &labels),
                DIM,
                "sha256:test".into(),
                &TrainSettings::default(),
            )
        };
        let (a, b) = (train_once()?, train_once()?);
        let probe = train.concat();
        assert_eq!(a.probabilities(&probe)?, b.probabilities(&probe)?);
        Ok(())
    }

    #[test]
    fn a_head_round_trips_through_a_file_with_its_metadata() -> TestResult {
        let (train, labels) = blobs(2, 10, 6);
        let mut head = Head::train(
            names(2),
            &examples(&train, &labels),
            DIM,
            "sha256:abc".into(),
            &TrainSettings::default(),
        )?;
        head.meta_mut().version = 3;
        head.meta_mut().parent = Some(2);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("global/head-3.safetensors");
        head.save(&path)?;
        let back = Head::load(&path)?;
        assert_eq!(back.meta(), head.meta());
        let probe = train.concat();
        assert_eq!(back.probabilities(&probe)?, head.probabilities(&probe)?);
        // The file is a plain safetensors file: other tools read its weights.
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        assert_eq!(tensors["layer0.weight"].dims(), &[2, DIM]);
        Ok(())
    }

    #[test]
    fn a_head_of_another_backbone_is_refused_clearly() -> TestResult {
        let (train, labels) = blobs(2, 10, 7);
        let head = Head::train(
            names(2),
            &examples(&train, &labels),
            DIM,
            "sha256:abc".into(),
            &TrainSettings::default(),
        )?;
        assert!(head.check_backbone("sha256:abc", DIM).is_ok());
        let error = head
            .check_backbone("sha256:def", DIM)
            .err()
            .ok_or("another backbone was accepted")?;
        let text = error.to_string();
        assert!(
            text.contains("sha256:abc") && text.contains("sha256:def"),
            "{text}"
        );
        assert_eq!(error.kind(), "head_mismatch");
        assert!(head.check_backbone("sha256:abc", DIM + 1).is_err());
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() -> TestResult {
        let (train, labels) = blobs(2, 5, 8);
        let train_with = |classes: Vec<String>, labels: &[usize]| {
            Head::train(
                classes,
                &examples(&train, labels),
                DIM,
                "sha256:x".into(),
                &TrainSettings::default(),
            )
        };
        assert!(train_with(names(1), &vec![0; labels.len()]).is_err());
        assert!(train_with(names(2), &vec![5; labels.len()]).is_err());
        let head = train_with(names(2), &labels)?;
        assert!(head.probabilities(&[1.0; DIM + 1]).is_err());
        assert!(head.probabilities(&[])?.is_empty());
        assert!(Head::from_bytes(b"not a head").is_err());
        let mut bytes = head.to_bytes()?;
        bytes.truncate(bytes.len() - 4);
        assert!(Head::from_bytes(&bytes).is_err());
        Ok(())
    }
}
