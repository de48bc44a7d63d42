// AssemblyScript source of the forward pass's elementwise kernels (compiled by build.mjs, with
// --importMemory, into elementwise-wasm.ts). The module has no memory of its own: LlamaModel
// instantiates it over its WasmArena's memory (`env.memory`), so every argument is a byte offset
// into the buffers the matmul kernels read and write. It has no data segment either (instantiating
// it writes nothing into that memory). The JS kernels in ../llama.ts are the references these are
// held to (elementwise.test.ts). Any n is accepted: four lanes at a time, then a scalar tail.

/**
 * e^x for x <= 0, four lanes: x = k ln2 + r with |r| <= ln2/2 (ln2 split in two so that k ln2 is
 * exact to f32), e^r by the degree-6 minimax polynomial of Cephes expf (relative error ~1e-7),
 * times 2^k built in the exponent bits. Below -87.3, 2^k would be subnormal: the result is
 * flushed to 0 (SiLU's g * e^g is then below 1e-36; the JS reference keeps those ulps).
 */
@inline function expNonPositive4(x: v128): v128 {
  const tiny = f32x4.lt(x, f32x4.splat(-87.3));
  // Clamping keeps k and the exponent arithmetic in range for -inf and huge |x| (masked anyway).
  const xc = f32x4.max(x, f32x4.splat(-88.0));
  const k = f32x4.nearest(f32x4.mul(xc, f32x4.splat(1.4426950408889634)));
  let r = f32x4.sub(xc, f32x4.mul(k, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(k, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1));
  const pow2k = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(k), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(p, pow2k), tiny);
}

/**
 * silu(g) * u, four lanes. With e = e^-|g| in (0, 1] the sigmoid never overflows:
 * sigmoid(g) = 1 / (1 + e) for g >= 0 and e / (1 + e) below, so silu(g) = (g >= 0 ? g : g e) / (1 + e).
 * g = 0 gives exactly 0; |g| large (or infinite) gives g or 0 (times u), never NaN; NaN stays NaN.
 */
@inline function swiglu4(g: v128, u: v128): v128 {
  const neg = f32x4.lt(g, f32x4.splat(0));
  const e = expNonPositive4(v128.or(g, f32x4.splat(-0.0))); // -|g|: set the sign bit
  // g e is NaN only for g = -inf (e = 0): the mask makes that lane's silu 0, its limit.
  const num = v128.bitselect(v128.andnot(f32x4.mul(g, e), f32x4.eq(e, f32x4.splat(0))), g, neg);
  return f32x4.mul(f32x4.div(num, f32x4.add(e, f32x4.splat(1))), u);
}

/** g[i] = silu(g[i]) * u[i] for i < n (f32 at byte offsets g, u): the SwiGLU of the FFN. */
export function swiglu(g: usize, u: usize, n: i32): void {
  const n4 = n & ~3;
  let i = 0;
  for (; i < n4; i += 4) {
    const o = <usize>i << 2;
    v128.store(g + o, swiglu4(v128.load(g + o), v128.load(u + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(g + o, f32x4.extract_lane(swiglu4(f32x4.splat(load<f32>(g + o)), f32x4.splat(load<f32>(u + o))), 0));
  }
}

/**
 * out[i] = x[i] * scale * w[i] for i < n, scale = 1 / sqrt(mean(x^2) + eps): one row's RMSNorm
 * as llama.cpp computes it (ggml_compute_forward_rms_norm_f32 in ggml/src/ggml-cpu/ops.cpp): f32
 * squares summed in f64, mean and scale rounded to f32, then x * scale and * w in f32. out may
 * be x (the sum is taken before anything is written).
 */
export function rmsNorm(out: usize, x: usize, w: usize, n: i32, eps: f32): void {
  const n4 = n & ~3;
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i < n4; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    const sq = f32x4.mul(v, v);
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(sq));
    acc = f64x2.add(acc, f64x2.promote_low_f32x4(v128.shuffle<u32>(sq, sq, 2, 3, 0, 1)));
  }
  let sum = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    sum += <f64>(v * v);
  }
  const mean = <f32>(sum / <f64>n);
  const scale: f32 = <f32>1.0 / sqrt<f32>(mean + eps);
  const vs = f32x4.splat(scale);
  for (i = 0; i < n4; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(x + o), vs), v128.load(w + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, load<f32>(x + o) * scale * load<f32>(w + o));
  }
}

/** a[i] += b[i] for i < n: the residual adds. */
export function addRows(a: usize, b: usize, n: i32): void {
  const n4 = n & ~3;
  let i = 0;
  for (; i < n4; i += 4) {
    const o = <usize>i << 2;
    v128.store(a + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(a + o, load<f32>(a + o) + load<f32>(b + o));
  }
}
