//! Zero padding of the last two dims, for convolutions whose padding is not symmetric (the
//! VAE encoder's downsamplers pad right and bottom by one before a stride-2 conv).

use super::expect_rank;
use crate::engine::error::{EngineError, Result};
use crate::engine::op::PadGeom;
use crate::engine::shape::Shape;
use crate::engine::tensor::Tensor;

impl Tensor {
    /// Pads `[N, C, H, W]` with zeros: `left`/`right` columns and `top`/`bottom` rows, like
    /// `torch.nn.functional.pad(x, (left, right, top, bottom))`. Keeps the dtype.
    pub fn pad2d(&self, left: usize, right: usize, top: usize, bottom: usize) -> Result<Tensor> {
        expect_rank("pad2d", "input", self, 4)?;
        let d = self.dims();
        let (planes, h, w) = (d[0] * d[1], d[2], d[3]);
        let grow =
            |size: usize, a: usize, b: usize| size.checked_add(a).and_then(|s| s.checked_add(b));
        let (Some(ho), Some(wo)) = (grow(h, top, bottom), grow(w, left, right)) else {
            return Err(EngineError::invalid(
                "pad2d",
                format!("padding overflows shape {}", self.shape()),
            ));
        };
        let out_shape = Shape::from((d[0], d[1], ho, wo));
        out_shape.checked_elem_count("pad2d")?;
        let g = PadGeom {
            planes,
            h,
            w,
            left,
            right,
            top,
            bottom,
        };
        Ok(Tensor::from_storage(
            self.storage().pad2d(self.view_in_storage(), g)?,
            out_shape,
        ))
    }
}
