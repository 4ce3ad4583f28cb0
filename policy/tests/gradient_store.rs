//! The gradient store as oxrl builds candle (third_party/candle-core/OXRL.md): a tensor's
//! first gradient is stored as it is, later ones added to it. Gradients with one
//! contribution, with several, and with a strided one (through a transpose) must equal
//! their analytic values.

use candle_core::{Device, Tensor, Var};

#[test]
fn gradients_with_one_several_and_strided_contributions_are_exact() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
    let w = Var::new(&[[0.5f32, -1.], [2., 0.], [1., 1.]], &dev).unwrap();
    let z = Var::new(&[[1f32, -2., 3.], [0.5, 0., -1.]], &dev).unwrap();
    let m = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
    let ones = Tensor::ones((2, 1), candle_core::DType::F32, &dev).unwrap();
    // x has three contributions (a product, a square, a transpose); w one; z one, strided.
    let loss = ((x.matmul(&w).unwrap() * 2.).unwrap().sum_all().unwrap()
        + (x.as_tensor() * x.as_tensor()).unwrap().sum_all().unwrap()
        + x.t().unwrap().matmul(&ones).unwrap().sum_all().unwrap()
        + z.t().unwrap().matmul(&m).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();

    // d/dx: 2 * (row sums of w) + 2x + 1.
    let row_sums = [-0.5f32, 2., 2.];
    let xs = x.to_vec2::<f32>().unwrap();
    let want_x: Vec<Vec<f32>> = xs
        .iter()
        .map(|r| (0..3).map(|j| 2. * row_sums[j] + 2. * r[j] + 1.).collect())
        .collect();
    assert_eq!(grads.get(&x).unwrap().to_vec2::<f32>().unwrap(), want_x);
    // d/dw: 2 * (column sums of x), the same in both columns.
    let want_w = vec![vec![10f32, 10.], vec![14., 14.], vec![18., 18.]];
    assert_eq!(grads.get(&w).unwrap().to_vec2::<f32>().unwrap(), want_w);
    // d/dz: (m's row sums) broadcast over z's columns, reached through z's transpose.
    let want_z = vec![vec![3f32, 3., 3.], vec![7., 7., 7.]];
    assert_eq!(grads.get(&z).unwrap().to_vec2::<f32>().unwrap(), want_z);
}
