// Storage bindings of the attention entry points (attention.wgsl and attention_row.wgsl).

// Outputs (bindings 1, 2) of each entry point.
@group(0) @binding(1) var<storage, read_write> out_o: array<f32>; // forward (T, Hq, D)
@group(0) @binding(2) var<storage, read_write> out_lse: array<f32>; // forward (Hq, T)
@group(0) @binding(1) var<storage, read_write> out_delta: array<f32>; // delta (Hq, T)
@group(0) @binding(1) var<storage, read_write> out_dq: array<f32>; // dq (T, Hq, D)
@group(0) @binding(1) var<storage, read_write> out_dk: array<f32>; // dkv (T, Hkv, D)
@group(0) @binding(2) var<storage, read_write> out_dv: array<f32>; // dkv (T, Hkv, D)

// Inputs, at the same binding in every entry point that reads them.
@group(0) @binding(3) var<storage, read> in_q: array<f32>; // (T, Hq, D)
@group(0) @binding(4) var<storage, read> in_k: array<f32>; // (T, Hkv, D)
@group(0) @binding(5) var<storage, read> in_v: array<f32>; // (T, Hkv, D)
@group(0) @binding(6) var<storage, read> in_start: array<u32>; // (T) seqStart
@group(0) @binding(7) var<storage, read> in_end: array<u32>; // (T) seqEnd
@group(0) @binding(8) var<storage, read> in_dout: array<f32>; // (T, Hq, D)
@group(0) @binding(9) var<storage, read> in_lse: array<f32>; // (Hq, T)
@group(0) @binding(10) var<storage, read> in_delta: array<f32>; // (Hq, T)
@group(0) @binding(11) var<storage, read> in_o: array<f32>; // (T, Hq, D)
