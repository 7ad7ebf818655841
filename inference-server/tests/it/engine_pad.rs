//! `Tensor::pad2d` against a hand-written expectation (exact: padding only copies values).

use inference_server::engine::{DType, Device, Tensor};

test_device!(pads_each_side_with_zeros);
fn pads_each_side_with_zeros(device: &Device) {
    let x = Tensor::from_vec((1..=12).map(|v| v as f32).collect(), (1, 2, 2, 3), device).unwrap();
    let y = x.to_dtype(DType::F16).unwrap().pad2d(1, 0, 0, 2).unwrap();
    assert_eq!(y.dims(), &[1, 2, 4, 4]);
    assert_eq!(y.dtype(), DType::F16);
    #[rustfmt::skip]
    let want = vec![
        0., 1., 2., 3.,  0., 4., 5., 6.,  0., 0., 0., 0.,  0., 0., 0., 0.,
        0., 7., 8., 9.,  0., 10., 11., 12.,  0., 0., 0., 0.,  0., 0., 0., 0.,
    ];
    assert_eq!(y.to_vec_f32().unwrap(), want);
}

test_device!(vae_downsampler_padding_and_no_padding);
fn vae_downsampler_padding_and_no_padding(device: &Device) {
    let x = Tensor::from_vec(vec![1., 2., 3., 4.], (1, 1, 2, 2), device).unwrap();
    assert_eq!(
        x.pad2d(0, 1, 0, 1).unwrap().to_vec_f32().unwrap(),
        vec![1., 2., 0., 3., 4., 0., 0., 0., 0.]
    );
    assert_eq!(
        x.pad2d(0, 0, 0, 0).unwrap().to_vec_f32().unwrap(),
        vec![1., 2., 3., 4.]
    );
    let empty = Tensor::zeros((2, 3, 0, 2), DType::F32, device).unwrap();
    assert_eq!(empty.pad2d(1, 1, 1, 1).unwrap().dims(), &[2, 3, 2, 4]);
}

test_device!(bad_inputs_are_errors);
fn bad_inputs_are_errors(device: &Device) {
    let x = Tensor::zeros((2, 3), DType::F32, device).unwrap();
    assert_eq!(
        x.pad2d(1, 1, 1, 1).unwrap_err().to_string(),
        "pad2d: input must have rank 4, got shape [2, 3]"
    );
    let y = Tensor::zeros((1, 1, 1, 1), DType::F32, device).unwrap();
    assert!(y.pad2d(usize::MAX, 1, 0, 0).is_err());
}
