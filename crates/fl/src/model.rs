//! Models trained with candle: multinomial logistic regression, a one-hidden-layer
//! MLP and a small CNN (one convolution, ReLU, 2x2 max pooling, a linear layer), as
//! flat parameter vectors (the unit the protocol ships and aggregates).
//!
//! candle (Hugging Face) was picked over burn because it builds with the workspace's
//! toolchain with few dependencies, runs on the CPU without a backend choice, and is
//! the tensor library the rest of the project already uses.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Optimizer, SGD};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Uniform};

use crate::data::Dataset;

/// Model architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Multinomial logistic regression (one linear layer, softmax).
    LogReg,
    /// Linear, ReLU, linear.
    Mlp {
        /// Hidden units.
        hidden: usize,
    },
    /// Square images (inputs = side²): a `channels`-filter convolution (5x5 on images
    /// of side 16 or more, as MNIST's 28; 3x3 below, as digits' 8), bias, ReLU, 2x2 max
    /// pooling, then a linear layer to the classes.
    Cnn {
        /// Convolution filters.
        channels: usize,
    },
}

/// An architecture on a given input and output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Architecture.
    pub kind: ModelKind,
    /// Input features.
    pub inputs: usize,
    /// Output classes.
    pub classes: usize,
}

impl ModelSpec {
    /// The CNN's image side, kernel and pooled side, or why the inputs are not a
    /// square image it fits.
    pub fn cnn_geometry(&self) -> Result<(usize, usize, usize), String> {
        let side = (self.inputs as f64).sqrt().round() as usize;
        if side * side != self.inputs {
            return Err(format!(
                "a CNN needs square images; {} inputs are not",
                self.inputs
            ));
        }
        let kernel = if side >= 16 { 5 } else { 3 };
        let conv = side
            .checked_sub(kernel - 1)
            .filter(|c| *c >= 2 && c % 2 == 0);
        let conv = conv.ok_or_else(|| {
            format!("a CNN with a {kernel}x{kernel} kernel does not fit images of side {side}")
        })?;
        Ok((side, kernel, conv / 2))
    }

    /// Shapes of the parameter tensors, in flat order (weight `[in, out]`, then bias;
    /// a convolution's weight `[out, in, k, k]`).
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        match self.kind {
            ModelKind::Cnn { channels } => {
                // An unfit input size gives no parameters; `Net::new` names the reason.
                let Ok((_, k, pooled)) = self.cnn_geometry() else {
                    return Vec::new();
                };
                vec![
                    vec![channels, 1, k, k],
                    vec![channels],
                    vec![channels * pooled * pooled, self.classes],
                    vec![self.classes],
                ]
            }
            ModelKind::LogReg => vec![vec![self.inputs, self.classes], vec![self.classes]],
            ModelKind::Mlp { hidden } => vec![
                vec![self.inputs, hidden],
                vec![hidden],
                vec![hidden, self.classes],
                vec![self.classes],
            ],
        }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Initial parameters: uniform in ±1/sqrt(fan_in), as PyTorch's `nn.Linear`.
    pub fn init(&self, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.num_params());
        let shapes = self.shapes();
        for pair in shapes.chunks(2) {
            // Fan-in: a linear weight's rows, a convolution's in-channels x k x k.
            let fan_in: usize = match pair[0].as_slice() {
                [_, rest @ ..] if pair[0].len() == 4 => rest.iter().product(),
                s => s[0],
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let u = Uniform::new_inclusive(-bound, bound).expect("bound > 0");
            for s in pair {
                let n: usize = s.iter().product();
                out.extend((0..n).map(|_| u.sample(rng)));
            }
        }
        out
    }
}

/// Training or evaluation failed inside candle.
#[derive(Debug, thiserror::Error)]
#[error("model: {0}")]
pub struct ModelError(String);

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError(e.to_string())
    }
}

struct Net {
    spec: ModelSpec,
    vars: Vec<Var>,
}

impl Net {
    fn new(spec: ModelSpec, params: &[f32]) -> Result<Net, ModelError> {
        if matches!(spec.kind, ModelKind::Cnn { .. }) {
            spec.cnn_geometry().map_err(ModelError)?;
        }
        if params.len() != spec.num_params() {
            return Err(ModelError(format!(
                "{} parameters given, the model has {}",
                params.len(),
                spec.num_params()
            )));
        }
        let mut vars = Vec::new();
        let mut at = 0;
        for s in spec.shapes() {
            let n: usize = s.iter().product();
            vars.push(Var::from_slice(
                &params[at..at + n],
                s.as_slice(),
                &Device::Cpu,
            )?);
            at += n;
        }
        Ok(Net { spec, vars })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        match self.spec.kind {
            ModelKind::LogReg => x.matmul(v[0].as_tensor())?.broadcast_add(v[1].as_tensor()),
            ModelKind::Mlp { .. } => x
                .matmul(v[0].as_tensor())?
                .broadcast_add(v[1].as_tensor())?
                .relu()?
                .matmul(v[2].as_tensor())?
                .broadcast_add(v[3].as_tensor()),
            ModelKind::Cnn { channels } => {
                let (side, _, pooled) =
                    self.spec.cnn_geometry().map_err(candle_core::Error::msg)?;
                let batch = x.dim(0)?;
                x.reshape((batch, 1, side, side))?
                    .conv2d(v[0].as_tensor(), 0, 1, 1, 1)?
                    .broadcast_add(&v[1].as_tensor().reshape((1, channels, 1, 1))?)?
                    .relu()?
                    .max_pool2d(2)?
                    .reshape((batch, channels * pooled * pooled))?
                    .matmul(v[2].as_tensor())?
                    .broadcast_add(v[3].as_tensor())
            }
        }
    }

    fn params(&self) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::with_capacity(self.spec.num_params());
        for v in &self.vars {
            out.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

fn batch(data: &Dataset, idx: &[usize], flip: bool) -> Result<(Tensor, Tensor), ModelError> {
    let mut x = Vec::with_capacity(idx.len() * data.features);
    let mut y = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(data.row(i));
        let label = u32::from(data.y[i]);
        // Label flipping (an attack): class c becomes classes - 1 - c.
        y.push(if flip {
            data.classes as u32 - 1 - label
        } else {
            label
        });
    }
    Ok((
        Tensor::from_vec(x, (idx.len(), data.features), &Device::Cpu)?,
        Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
    ))
}

/// Local training settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the local data per round.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum (heavy ball, as PyTorch's `SGD(momentum=…)`), 0 for plain SGD.
    /// The velocity starts at zero every round: participants keep no optimizer state.
    pub momentum: f64,
}

/// Train from `params` with minibatch SGD on rows `idx` of `data`; returns the new
/// parameters. `flip_labels` trains on flipped labels (the label-flip attack).
pub fn train(
    spec: ModelSpec,
    params: &[f32],
    data: &Dataset,
    idx: &[usize],
    cfg: TrainConfig,
    flip_labels: bool,
    rng: &mut impl Rng,
) -> Result<Vec<f32>, ModelError> {
    let net = Net::new(spec, params)?;
    let mut sgd = SGD::new(net.vars.clone(), cfg.lr)?;
    // candle-nn's SGD has no momentum: the heavy-ball step is written out here.
    let mut velocity: Vec<Option<Tensor>> = vec![None; net.vars.len()];
    let mut order = idx.to_vec();
    for _ in 0..cfg.epochs {
        order.shuffle(rng);
        for b in order.chunks(cfg.batch.max(1)) {
            let (x, y) = batch(data, b, flip_labels)?;
            let loss = candle_nn::loss::cross_entropy(&net.forward(&x)?, &y)?;
            if cfg.momentum == 0.0 {
                sgd.backward_step(&loss)?;
                continue;
            }
            let grads = loss.backward()?;
            for (var, v) in net.vars.iter().zip(velocity.iter_mut()) {
                let Some(g) = grads.get(var) else { continue };
                let next = match v.take() {
                    Some(prev) => ((prev * cfg.momentum)? + g)?,
                    None => g.clone(),
                };
                var.set(&var.as_tensor().sub(&(&next * cfg.lr)?)?)?;
                *v = Some(next);
            }
        }
    }
    net.params()
}

/// Fraction of `data` classified correctly by `params`.
pub fn accuracy(spec: ModelSpec, params: &[f32], data: &Dataset) -> Result<f64, ModelError> {
    let net = Net::new(spec, params)?;
    let all: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for b in all.chunks(2000) {
        let (x, y) = batch(data, b, false)?;
        let pred = net.forward(&x)?.argmax(D::Minus1)?;
        correct += pred
            .eq(&y)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn toy() -> Dataset {
        // Two well-separated classes in 2-D.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let c = (i % 2) as u8;
            let centre = if c == 0 { 0.2 } else { 0.8 };
            x.push(centre + rng.random_range(-0.1..0.1));
            x.push(centre + rng.random_range(-0.1..0.1));
            y.push(c);
        }
        Dataset {
            features: 2,
            classes: 2,
            x,
            y,
        }
    }

    /// 8x8 images of a vertical (class 0) or horizontal (class 1) bar at a random
    /// place, with noise: no pixel alone tells the class, the bar's shape does.
    fn bars(n: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = (i % 2) as u8;
            let mut img = [0f32; 64];
            for p in img.iter_mut() {
                *p = rng.random_range(0.0..0.3);
            }
            let (at, from) = (rng.random_range(0..8usize), rng.random_range(0..4usize));
            for k in from..from + 4 {
                let (r, col) = if c == 0 { (k, at) } else { (at, k) };
                img[r * 8 + col] = 1.0;
            }
            x.extend_from_slice(&img);
            y.push(c);
        }
        Dataset {
            features: 64,
            classes: 2,
            x,
            y,
        }
    }

    #[test]
    fn the_cnn_learns_shapes_and_refuses_inputs_that_are_not_square_images() {
        let spec = ModelSpec {
            kind: ModelKind::Cnn { channels: 4 },
            inputs: 64,
            classes: 2,
        };
        // 3x3 kernel on 8x8, 6x6 pooled to 3x3: 4*9 + 4 + 36*2 + 2.
        assert_eq!(spec.num_params(), 36 + 4 + 72 + 2);
        assert_eq!(
            ModelSpec {
                inputs: 784,
                ..spec
            }
            .cnn_geometry()
            .unwrap(),
            (28, 5, 12)
        );
        let train_set = bars(400, 1);
        let test_set = bars(200, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let p0 = spec.init(&mut rng);
        let before = accuracy(spec, &p0, &test_set).unwrap();
        let idx: Vec<usize> = (0..train_set.len()).collect();
        let cfg = TrainConfig {
            epochs: 40,
            batch: 16,
            lr: 0.2,
            momentum: 0.0,
        };
        let p = train(spec, &p0, &train_set, &idx, cfg, false, &mut rng).unwrap();
        let after = accuracy(spec, &p, &test_set).unwrap();
        assert!(after > 0.95 && after > before, "{before} -> {after}");
        let odd = ModelSpec { inputs: 60, ..spec };
        assert_eq!(odd.num_params(), 0);
        let e = accuracy(odd, &[], &test_set).unwrap_err().to_string();
        assert!(e.contains("square images"), "{e}");
    }

    #[test]
    fn both_models_learn_a_separable_problem() {
        let data = toy();
        let idx: Vec<usize> = (0..data.len()).collect();
        for kind in [ModelKind::LogReg, ModelKind::Mlp { hidden: 8 }] {
            let spec = ModelSpec {
                kind,
                inputs: 2,
                classes: 2,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(4);
            let p0 = spec.init(&mut rng);
            assert_eq!(p0.len(), spec.num_params());
            let cfg = TrainConfig {
                epochs: 30,
                batch: 16,
                lr: 0.5,
                momentum: 0.0,
            };
            let p1 = train(spec, &p0, &data, &idx, cfg, false, &mut rng).unwrap();
            let acc = accuracy(spec, &p1, &data).unwrap();
            assert!(acc > 0.95, "{kind:?}: {acc}");
            // With momentum, fewer steps at a smaller rate learn it too, and the path
            // differs from plain SGD's.
            let heavy = TrainConfig {
                epochs: 5,
                lr: 0.1,
                momentum: 0.9,
                ..cfg
            };
            let mut r1 = ChaCha8Rng::seed_from_u64(5);
            let pm = train(spec, &p0, &data, &idx, heavy, false, &mut r1).unwrap();
            assert!(
                accuracy(spec, &pm, &data).unwrap() > 0.95,
                "{kind:?} momentum"
            );
            let plain = TrainConfig {
                momentum: 0.0,
                ..heavy
            };
            let mut r2 = ChaCha8Rng::seed_from_u64(5);
            let pp = train(spec, &p0, &data, &idx, plain, false, &mut r2).unwrap();
            assert_ne!(pm, pp);
            // Trained on flipped labels, the model learns the opposite.
            let p2 = train(spec, &p0, &data, &idx, cfg, true, &mut rng).unwrap();
            assert!(accuracy(spec, &p2, &data).unwrap() < 0.05);
        }
    }

    #[test]
    fn wrong_parameter_count_is_an_error() {
        let spec = ModelSpec {
            kind: ModelKind::LogReg,
            inputs: 2,
            classes: 2,
        };
        assert!(accuracy(spec, &[0.0; 5], &toy()).is_err());
    }
}
