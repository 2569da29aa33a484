// The CPU reference kernels: plain loops over typed arrays, accumulating in f64 (JS numbers).
import type { AttentionOptions, DeltaRuleOptions, GateActivation, RecurrentSeq, RopeOptions } from "../ops.js";
import { CpuTensor, f32Tensor } from "./tensor.js";

const rowTile = 32;

export function matmul(x: CpuTensor, w: CpuTensor, bias?: CpuTensor): CpuTensor {
  const [rows, k] = x.shape as [number, number];
  const [n, kw] = w.shape as [number, number];
  if (k !== kw) throw new Error(`matmul: x has ${k} columns, w has ${kw}`);
  const xs = x.f32();
  const b = bias?.f32();
  const out = new Float32Array(rows * n);
  const scratch = new Float32Array(k);
  // Tiles of x rows stay in cache while every weight row (converted once per tile) passes over them.
  for (let r0 = 0; r0 < rows; r0 += rowTile) {
    const r1 = Math.min(rows, r0 + rowTile);
    for (let j = 0; j < n; j++) {
      const wr = w.rowF32(j, scratch);
      const bj = b ? b[j]! : 0;
      for (let r = r0; r < r1; r++) {
        const base = r * k;
        let s0 = 0,
          s1 = 0,
          s2 = 0,
          s3 = 0;
        let i = 0;
        for (; i + 3 < k; i += 4) {
          s0 += xs[base + i]! * wr[i]!;
          s1 += xs[base + i + 1]! * wr[i + 1]!;
          s2 += xs[base + i + 2]! * wr[i + 2]!;
          s3 += xs[base + i + 3]! * wr[i + 3]!;
        }
        for (; i < k; i++) s0 += xs[base + i]! * wr[i]!;
        out[r * n + j] = s0 + s1 + s2 + s3 + bj;
      }
    }
  }
  return f32Tensor([rows, n], out);
}

export function embed(table: CpuTensor, ids: Int32Array): CpuTensor {
  const [vocab, hidden] = table.shape as [number, number];
  const out = new Float32Array(ids.length * hidden);
  const row = new Float32Array(hidden);
  ids.forEach((id, r) => {
    if (id < 0 || id >= vocab) throw new RangeError(`embed: token id ${id} outside vocabulary of ${vocab}`);
    out.set(table.rowF32(id, row), r * hidden);
  });
  return f32Tensor([ids.length, hidden], out);
}

export function rmsNorm(x: CpuTensor, w: CpuTensor, eps: number, offset: number): CpuTensor {
  const g = w.shape[0]!;
  const xs = x.f32();
  const ws = w.f32();
  if (xs.length % g !== 0) throw new Error(`rmsNorm: ${xs.length} values are not groups of ${g}`);
  const out = new Float32Array(xs.length);
  for (let base = 0; base < xs.length; base += g) {
    let ss = 0;
    for (let i = 0; i < g; i++) ss += xs[base + i]! * xs[base + i]!;
    // HF rounds the normalized value to the input dtype (f32 here) before the weight multiply.
    const r = 1 / Math.sqrt(ss / g + eps);
    for (let i = 0; i < g; i++) out[base + i] = Math.fround(xs[base + i]! * r) * (offset + ws[i]!);
  }
  return f32Tensor(x.shape, out);
}

export function rope(x: CpuTensor, o: RopeOptions): CpuTensor {
  const [rows, cols] = x.shape as [number, number];
  const xs = x.f32();
  const out = Float32Array.from(xs);
  const half = o.invFreq.length;
  const heads = cols / o.headDim;
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let r = 0; r < rows; r++) {
    const p = o.positions[r]!;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * o.invFreq[i]!); // torch forms this product in f32
      cos[i] = Math.cos(angle) * o.scale;
      sin[i] = Math.sin(angle) * o.scale;
    }
    for (let h = 0; h < heads; h++) {
      const base = r * cols + h * o.headDim;
      for (let i = 0; i < half; i++) {
        const x1 = xs[base + i]!;
        const x2 = xs[base + i + half]!;
        out[base + i] = x1 * cos[i]! - x2 * sin[i]!;
        out[base + i + half] = x2 * cos[i]! + x1 * sin[i]!;
      }
    }
  }
  return f32Tensor(x.shape, out);
}

/** Online-softmax attention over blocks, so KV can arrive block by block from any tier; also returns each row's log-sum-exp. */
export function attention(q: CpuTensor, o: AttentionOptions): { out: CpuTensor; lse: CpuTensor } {
  const { heads, kvHeads, headDim: hd, scale } = o;
  const cols = heads * hd;
  const kvCols = kvHeads * hd;
  const group = heads / kvHeads;
  const qs = q.f32();
  const rows = q.shape[0]!;
  const out = new Float32Array(rows * cols);
  const lse = new Float32Array(rows * heads).fill(-Infinity);
  // Running max, sum and unnormalized output per (row, head), updated one block at a time.
  const m = new Float64Array(rows * heads).fill(-Infinity);
  const l = new Float64Array(rows * heads);
  const acc = new Float64Array(rows * cols);
  const scores = new Float64Array(Math.max(1, ...o.seqs.flatMap((s) => s.blocks.map((b) => b.length))));
  const softcap = o.softcap ?? 0;
  for (const seq of o.seqs) {
    for (const block of seq.blocks) {
      const ks = (block.k as CpuTensor).f32();
      const vs = (block.v as CpuTensor).f32();
      for (let r = 0; r < seq.qRows; r++) {
        const row = seq.qRow + r;
        const pos = seq.qPos + r;
        // Keys of this block the row may see: causal, and inside the sliding window.
        const jEnd = Math.min(block.length, pos - block.start + 1);
        const jStart = o.slidingWindow ? Math.max(0, pos - o.slidingWindow + 1 - block.start) : 0;
        if (jEnd <= jStart) continue;
        for (let h = 0; h < heads; h++) {
          const qBase = row * cols + h * hd;
          const kvOff = Math.floor(h / group) * hd;
          let blockMax = -Infinity;
          for (let j = jStart; j < jEnd; j++) {
            const kBase = j * kvCols + kvOff;
            let s = 0;
            for (let d = 0; d < hd; d++) s += qs[qBase + d]! * ks[kBase + d]!;
            s *= scale;
            if (softcap) s = softcap * Math.tanh(s / softcap);
            scores[j] = s;
            if (s > blockMax) blockMax = s;
          }
          const mi = row * heads + h;
          const mNew = Math.max(m[mi]!, blockMax);
          const rescale = Math.exp(m[mi]! - mNew);
          let sum = l[mi]! * rescale;
          const aBase = row * cols + h * hd;
          if (rescale !== 1) for (let d = 0; d < hd; d++) acc[aBase + d]! *= rescale;
          for (let j = jStart; j < jEnd; j++) {
            const p = Math.exp(scores[j]! - mNew);
            sum += p;
            const vBase = j * kvCols + kvOff;
            for (let d = 0; d < hd; d++) acc[aBase + d]! += p * vs[vBase + d]!;
          }
          m[mi] = mNew;
          l[mi] = sum;
        }
      }
    }
  }
  const sinks = o.sinks ? (o.sinks as CpuTensor).f32() : undefined;
  for (let i = 0; i < rows * heads; i++) {
    if (sinks) {
      // The sink joins the softmax's denominator only.
      const s = sinks[i % heads]!;
      const mNew = Math.max(m[i]!, s);
      l[i] = l[i]! * Math.exp(m[i]! - mNew) + Math.exp(s - mNew);
      for (let d = 0; d < hd; d++) acc[i * hd + d]! *= Math.exp(m[i]! - mNew);
      m[i] = mNew;
    }
    if (!(l[i]! > 0)) continue;
    lse[i] = m[i]! + Math.log(l[i]!);
    for (let d = 0; d < hd; d++) out[i * hd + d] = acc[i * hd + d]! / l[i]!;
  }
  return { out: f32Tensor([rows, cols], out), lse: f32Tensor([rows, heads], lse) };
}

/** Merges attention over two disjoint key sets from their normalized outputs and log-sum-exps. */
export function mergeAttention(
  a: { out: CpuTensor; lse: CpuTensor },
  b: { out: CpuTensor; lse: CpuTensor },
): { out: CpuTensor; lse: CpuTensor } {
  const [rows, heads] = a.lse.shape as [number, number];
  const hd = a.out.shape[1]! / heads;
  const [oa, ob, la, lb] = [a.out.f32(), b.out.f32(), a.lse.f32(), b.lse.f32()];
  const out = new Float32Array(oa.length);
  const lse = new Float32Array(la.length);
  for (let i = 0; i < rows * heads; i++) {
    const m = Math.max(la[i]!, lb[i]!);
    if (m === -Infinity) {
      lse[i] = -Infinity;
      continue;
    }
    const wa = Math.exp(la[i]! - m);
    const wb = Math.exp(lb[i]! - m);
    const z = wa + wb;
    lse[i] = m + Math.log(z);
    for (let d = 0; d < hd; d++) out[i * hd + d] = (wa * oa[i * hd + d]! + wb * ob[i * hd + d]!) / z;
  }
  return { out: f32Tensor(a.out.shape, out), lse: f32Tensor(a.lse.shape, lse) };
}

export function gatedActivation(gate: CpuTensor, up: CpuTensor, act: GateActivation): CpuTensor {
  const g = gate.f32();
  const u = up.f32();
  const out = new Float32Array(g.length);
  if (act === "silu") {
    for (let i = 0; i < g.length; i++) out[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
  } else if (act === "sigmoid") {
    for (let i = 0; i < g.length; i++) out[i] = u[i]! / (1 + Math.exp(-g[i]!));
  } else {
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!;
      out[i] = 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x))) * u[i]!;
    }
  }
  return f32Tensor(gate.shape, out);
}

export function add(a: CpuTensor, b: CpuTensor): CpuTensor {
  const x = a.f32();
  const y = b.f32();
  if (x.length !== y.length) throw new Error(`add: ${x.length} vs ${y.length} values`);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! + y[i]!;
  return f32Tensor(a.shape, out);
}

export function scale(x: CpuTensor, factor: number): CpuTensor {
  return f32Tensor(
    x.shape,
    x.f32().map((v) => v * factor),
  );
}

export function softcap(x: CpuTensor, cap: number): CpuTensor {
  return f32Tensor(
    x.shape,
    x.f32().map((v) => cap * Math.tanh(v / cap)),
  );
}

export function clampedSwiglu(gateUp: CpuTensor, alpha: number, limit: number): CpuTensor {
  const [rows, cols] = gateUp.shape as [number, number];
  const x = gateUp.f32();
  const out = new Float32Array((rows * cols) / 2);
  for (let i = 0; i < out.length; i++) {
    const g = Math.min(x[2 * i]!, limit);
    const u = Math.min(Math.max(x[2 * i + 1]!, -limit), limit);
    out[i] = (u + 1) * (g / (1 + Math.exp(-alpha * g)));
  }
  return f32Tensor([rows, cols / 2], out);
}

export function gatherRows(x: CpuTensor, rows: Int32Array): CpuTensor {
  const cols = x.shape[1]!;
  const xs = x.f32();
  const out = new Float32Array(rows.length * cols);
  rows.forEach((r, i) => out.set(xs.subarray(r * cols, (r + 1) * cols), i * cols));
  return f32Tensor([rows.length, cols], out);
}

export function accumulateRows(acc: CpuTensor, y: CpuTensor, rows: Int32Array, scales: Float32Array): void {
  const cols = acc.shape[1]!;
  const a = acc.data as Float32Array;
  const ys = y.f32();
  rows.forEach((r, i) => {
    for (let c = 0; c < cols; c++) a[r * cols + c]! += scales[i]! * ys[i * cols + c]!;
  });
}

export function causalConv1d(x: CpuTensor, w: CpuTensor, seqs: readonly RecurrentSeq[]): CpuTensor {
  const [rows, channels] = x.shape as [number, number];
  const kernel = w.shape[w.shape.length - 1]!;
  const xs = x.f32();
  const ws = w.f32();
  const out = new Float32Array(rows * channels);
  for (const seq of seqs) {
    const state = (seq.state as CpuTensor).data as Float32Array; // [channels, kernel - 1], oldest first
    for (let c = 0; c < channels; c++) {
      const history = Array.from(state.subarray(c * (kernel - 1), (c + 1) * (kernel - 1)));
      for (let r = 0; r < seq.rows; r++) {
        history.push(xs[(seq.row + r) * channels + c]!);
        let s = 0;
        for (let j = 0; j < kernel; j++) s += ws[c * kernel + j]! * history[history.length - kernel + j]!;
        out[(seq.row + r) * channels + c] = s / (1 + Math.exp(-s));
      }
      state.set(history.slice(history.length - (kernel - 1)), c * (kernel - 1));
    }
  }
  return f32Tensor([rows, channels], out);
}

export function gatedDeltaRule(qkv: CpuTensor, a: CpuTensor, b: CpuTensor, o: DeltaRuleOptions): CpuTensor {
  const { kHeads, vHeads, kDim, vDim } = o;
  const cols = qkv.shape[1]!;
  const xs = qkv.f32();
  const as = a.f32();
  const bs = b.f32();
  const aLog = (o.aLog as CpuTensor).f32();
  const dtBias = (o.dtBias as CpuTensor).f32();
  const rows = qkv.shape[0]!;
  const out = new Float32Array(rows * vHeads * vDim);
  const group = vHeads / kHeads;
  const q = new Float64Array(kDim);
  const k = new Float64Array(kDim);
  const kv = new Float64Array(vDim);
  const l2 = (src: Float32Array, at: number, dst: Float64Array, scale: number) => {
    let ss = 0;
    for (let d = 0; d < kDim; d++) ss += src[at + d]! * src[at + d]!;
    const inv = scale / Math.sqrt(ss + 1e-6);
    for (let d = 0; d < kDim; d++) dst[d] = src[at + d]! * inv;
  };
  for (const seq of o.seqs) {
    const state = (seq.state as CpuTensor).data as Float32Array; // [vHeads, kDim, vDim]
    for (let r = seq.row; r < seq.row + seq.rows; r++) {
      for (let h = 0; h < vHeads; h++) {
        const kh = Math.floor(h / group);
        l2(xs, r * cols + kh * kDim, q, 1 / Math.sqrt(kDim));
        l2(xs, r * cols + kHeads * kDim + kh * kDim, k, 1);
        const vAt = r * cols + 2 * kHeads * kDim + h * vDim;
        const x = as[r * vHeads + h]! + dtBias[h]!;
        const softplus = x > 20 ? x : Math.log1p(Math.exp(x));
        const decay = Math.exp(-Math.exp(aLog[h]!) * softplus);
        const beta = 1 / (1 + Math.exp(-bs[r * vHeads + h]!));
        const S = state.subarray(h * kDim * vDim, (h + 1) * kDim * vDim);
        kv.fill(0);
        for (let i = 0; i < kDim; i++) {
          for (let j = 0; j < vDim; j++) {
            S[i * vDim + j] = S[i * vDim + j]! * decay;
            kv[j]! += S[i * vDim + j]! * k[i]!;
          }
        }
        for (let j = 0; j < vDim; j++) kv[j] = (xs[vAt + j]! - kv[j]!) * beta;
        for (let j = 0; j < vDim; j++) {
          let s = 0;
          for (let i = 0; i < kDim; i++) {
            S[i * vDim + j] = S[i * vDim + j]! + k[i]! * kv[j]!;
            s += S[i * vDim + j]! * q[i]!;
          }
          out[(r * vHeads + h) * vDim + j] = s;
        }
      }
    }
  }
  return f32Tensor([rows, vHeads * vDim], out);
}
