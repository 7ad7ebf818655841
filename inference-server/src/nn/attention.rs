//! diffusers' `Attention` (the default processor): multi-head attention of a sequence over
//! itself or over a context, through the engine's tiled attention.

use crate::engine::{Device, Tensor};

use super::{Linear, NnError, WeightSource};

/// `to_q`, `to_k`, `to_v` (biased only with `qkv_bias`) and `to_out.0` (always biased); scores
/// scaled by `head_dim^-0.5`. The `L × S` score matrix is never built.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    /// Loads the projections under `prefix`: queries from `query_dim`, keys and values from
    /// `context_dim` (self-attention when `None`), `heads × head_dim` inner width.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        weights: &dyn WeightSource,
        prefix: &str,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        device: &Device,
    ) -> Result<Attention, NnError> {
        if heads == 0 || head_dim == 0 {
            return Err(NnError::Input {
                field: "attention_head_dim",
                rule: format!(
                    "{prefix} needs at least one head of width >= 1, got {heads} × {head_dim}"
                ),
            });
        }
        let inner = heads * head_dim;
        let kv = context_dim.unwrap_or(query_dim);
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(Attention {
            to_q: Linear::load(weights, &p("to_q"), query_dim, inner, qkv_bias, device)?,
            to_k: Linear::load(weights, &p("to_k"), kv, inner, qkv_bias, device)?,
            to_v: Linear::load(weights, &p("to_v"), kv, inner, qkv_bias, device)?,
            to_out: Linear::load(weights, &p("to_out.0"), inner, query_dim, true, device)?,
            heads,
            head_dim,
        })
    }

    /// Attends `x [B, L, query_dim]` over `context [B, S, context_dim]` (over `x` itself when
    /// `None`) and returns `[B, L, query_dim]`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor, NnError> {
        let context = context.unwrap_or(x);
        if x.rank() != 3 || context.rank() != 3 {
            return Err(NnError::Input {
                field: "attention input",
                rule: format!(
                    "x and context must be [B, L, C], got {} and {}",
                    x.shape(),
                    context.shape()
                ),
            });
        }
        let split = |t: Tensor| -> Result<Tensor, NnError> {
            let d = t.dims();
            let (b, l) = (d[0], d[1]);
            Ok(t.reshape((b, l, self.heads, self.head_dim))?
                .permute(&[0, 2, 1, 3])?)
        };
        let q = split(self.to_q.forward(x)?)?;
        let k = split(self.to_k.forward(context)?)?;
        let v = split(self.to_v.forward(context)?)?;
        let scale = (self.head_dim as f32).powf(-0.5);
        let out = Tensor::attention(&q, &k, &v, scale, false)?;
        let (b, l) = (x.dims()[0], x.dims()[1]);
        let out = out
            .permute(&[0, 2, 1, 3])?
            .reshape((b, l, self.heads * self.head_dim))?;
        self.to_out.forward(&out)
    }
}
