// safetensors: exact F32 round trip, HF header layout, F16/BF16 decoding, BF16 rounding, sharding, errors.
import assert from "node:assert/strict";
import {
  bf16ToF32,
  f32ToBf16,
  INDEX_FILE,
  SafetensorsReader,
  writeSafetensorsDir,
  writeSafetensorsFile,
} from "../../model/safetensors.ts";
import { UserError } from "../../pipeline/errors.ts";
import { randomArray, report } from "../helpers.ts";

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "st_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Build a safetensors file by hand (no padding) from raw little-endian bytes. */
function handMade(tensors: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]) {
  const h: Record<string, unknown> = {};
  let off = 0;
  for (const t of tensors) {
    h[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  const head = new TextEncoder().encode(JSON.stringify(h));
  const out = new Uint8Array(8 + head.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let p = 8 + head.length;
  for (const t of tensors) {
    out.set(t.bytes, p);
    p += t.bytes.length;
  }
  return out;
}

function u16(bits: number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(bits).buffer);
}

Deno.test("safetensors: F32 write/read is bit-exact; header is 8-byte aligned, space padded, format pt", async () => {
  await withTemp(async (dir) => {
    const a = randomArray(37, 1, 3), b = new Float32Array([0, -0, Infinity, -1e-40, NaN, 1.5]);
    const path = `${dir}/x.safetensors`;
    await writeSafetensorsFile(path, [
      { name: "a", shape: [37], data: a },
      { name: "b.weight", shape: [2, 3], data: () => b },
    ], "f32");
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.match(text, /^\{"__metadata__":\{"format":"pt"\},"a":/);
    assert.equal(text, text.trimEnd() + " ".repeat(text.length - text.trimEnd().length));
    assert.equal(bytes.length, 8 + n + (37 + 6) * 4);
    const r = await SafetensorsReader.open(path);
    try {
      assert.deepEqual(r.names(), ["a", "b.weight"]);
      assert.deepEqual(r.info("b.weight")?.shape, [2, 3]);
      assert.deepEqual(r.metadata, { format: "pt" });
      const ra = await r.read("a"), rb = await r.read("b.weight");
      assert.deepEqual(new Uint32Array(ra.buffer), new Uint32Array(a.buffer));
      assert.deepEqual(new Uint32Array(rb.buffer), new Uint32Array(b.buffer));
    } finally {
      r.close();
    }
  });
});

Deno.test("safetensors: F16 and BF16 tensors read as known values", async () => {
  await withTemp(async (dir) => {
    const path = `${dir}/h.safetensors`;
    const f16 = [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x3555, 0x8000];
    const f16Want = [
      1,
      -2,
      0.5,
      65504,
      2 ** -24,
      1023 * 2 ** -24,
      Infinity,
      -Infinity,
      0.333251953125,
      -0,
    ];
    const bf = [0x3f80, 0xc000, 0x4049, 0x7f80, 0x0001, 0xff80, 0x3eab];
    const bfWant = [1, -2, 3.140625, Infinity, 2 ** -133, -Infinity, 0.333984375];
    await Deno.writeFile(
      path,
      handMade([
        { name: "half", dtype: "F16", shape: [2, 5], bytes: u16(f16) },
        { name: "nan16", dtype: "F16", shape: [1], bytes: u16([0x7e00]) },
        { name: "bf", dtype: "BF16", shape: [7], bytes: u16(bf) },
        { name: "ids", dtype: "I64", shape: [1], bytes: new Uint8Array(8) },
      ]),
    );
    const r = await SafetensorsReader.open(path);
    try {
      assert.deepEqual([...await r.read("half")], f16Want);
      assert.ok(Number.isNaN((await r.read("nan16"))[0]));
      assert.deepEqual([...await r.read("bf")], bfWant);
      await assert.rejects(
        () => r.read("ids"),
        (e: unknown) => e instanceof UserError && e.message.includes("dtype I64"),
      );
      await assert.rejects(() => r.read("nope"), UserError);
    } finally {
      r.close();
    }
  });
});

Deno.test("safetensors: f32 → bf16 rounds to nearest even", () => {
  const x = new Float32Array([
    1,
    1 + 2 ** -8, // halfway between 1 and 1+2^-7: ties to even (1)
    1 + 3 * 2 ** -8, // halfway between 1+2^-7 and 1+2^-6: ties to even (1+2^-6)
    1 + 2 ** -8 + 2 ** -20, // just above halfway: up
    -3.140625,
    Infinity,
    NaN,
    3.4028234663852886e38, // rounds up to infinity, as torch does
  ]);
  const b = f32ToBf16(x);
  const back = [...b].map(bf16ToF32);
  assert.deepEqual(back.slice(0, 6), [1, 1, 1 + 2 ** -6, 1 + 2 ** -7, -3.140625, Infinity]);
  assert.ok(Number.isNaN(back[6]));
  assert.equal(back[7], Infinity);
});

Deno.test("safetensors: BF16 write reloads within bf16 rounding", async () => {
  await withTemp(async (dir) => {
    const a = randomArray(1000, 7, 5);
    await writeSafetensorsFile(
      `${dir}/b.safetensors`,
      [{ name: "a", shape: [10, 100], data: a }],
      "bf16",
    );
    const r = await SafetensorsReader.open(`${dir}/b.safetensors`);
    try {
      assert.equal(r.info("a")?.dtype, "BF16");
      const back = await r.read("a");
      let err = 0;
      for (let i = 0; i < a.length; i++) {
        err = Math.max(err, Math.abs(back[i] - a[i]) / Math.abs(a[i]));
      }
      report("bf16 round trip (relative, no floor: all |x| > 0)", err, 2 ** -8);
      assert.ok(err <= 2 ** -8);
      // independently: each value is the nearer of its two bf16 neighbours (ties to even)
      const bits = new Uint32Array(a.buffer);
      for (let i = 0; i < a.length; i++) {
        const lo = bits[i] & 0xffff0000, hi = lo + 0x10000;
        const vlo = new Float32Array(new Uint32Array([lo]).buffer)[0];
        const vhi = new Float32Array(new Uint32Array([hi]).buffer)[0];
        const dlo = Math.abs(a[i] - vlo), dhi = Math.abs(vhi - a[i]);
        const want = dlo < dhi ? vlo : dhi < dlo ? vhi : ((lo >>> 16) & 1) === 0 ? vlo : vhi;
        assert.equal(back[i], want, `element ${i}`);
      }
    } finally {
      r.close();
    }
  });
});

Deno.test("safetensors: sharded directory write and read", async () => {
  await withTemp(async (dir) => {
    const ts = Array.from({ length: 5 }, (_, i) => ({
      name: `t${i}`,
      shape: [10 + i, 10],
      data: randomArray((10 + i) * 10, i, 1),
    }));
    // 400, 440, 480, 520, 560 bytes; at most 1000 bytes per shard → [t0,t1], [t2,t3], [t4]
    const files = await writeSafetensorsDir(dir, ts, { dtype: "f32", shardBytes: 1000 });
    assert.deepEqual(files, [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      INDEX_FILE,
    ]);
    const index = JSON.parse(await Deno.readTextFile(`${dir}/${INDEX_FILE}`));
    assert.equal(index.metadata.total_size, 4 * (100 + 110 + 120 + 130 + 140));
    assert.equal(index.weight_map.t1, "model-00001-of-00003.safetensors");
    assert.equal(index.weight_map.t3, "model-00002-of-00003.safetensors");
    assert.equal(index.weight_map.t4, "model-00003-of-00003.safetensors");
    const r = await SafetensorsReader.open(dir);
    try {
      assert.deepEqual(r.names(), ["t0", "t1", "t2", "t3", "t4"]);
      for (const t of ts) assert.deepEqual(await r.read(t.name), t.data);
    } finally {
      r.close();
    }
    // a single file when everything fits
    await withTemp(async (d2) => {
      assert.deepEqual(await writeSafetensorsDir(d2, ts, { dtype: "bf16" }), ["model.safetensors"]);
    });
  });
});

Deno.test("safetensors: damaged files and directories are clear errors", async () => {
  await withTemp(async (dir) => {
    const good = handMade([{ name: "a", dtype: "F32", shape: [4], bytes: new Uint8Array(16) }]);
    await Deno.writeFile(`${dir}/trunc.safetensors`, good.subarray(0, good.length - 4));
    await assert.rejects(
      () => SafetensorsReader.open(`${dir}/trunc.safetensors`),
      (e: unknown) => e instanceof UserError && e.message.includes("data_offsets"),
    );
    await Deno.writeFile(`${dir}/short.safetensors`, new Uint8Array(3));
    await assert.rejects(() => SafetensorsReader.open(`${dir}/short.safetensors`), UserError);
    const badLen = good.slice();
    new DataView(badLen.buffer).setBigUint64(0, 1n << 40n, true);
    await Deno.writeFile(`${dir}/len.safetensors`, badLen);
    await assert.rejects(() => SafetensorsReader.open(`${dir}/len.safetensors`), UserError);
    await Deno.mkdir(`${dir}/empty`);
    await assert.rejects(
      () => SafetensorsReader.open(`${dir}/empty`),
      (e: unknown) => e instanceof UserError && e.message.includes("model.safetensors"),
    );
    await Deno.writeTextFile(
      `${dir}/empty/${INDEX_FILE}`,
      JSON.stringify({ weight_map: { a: "missing.safetensors" } }),
    );
    await assert.rejects(
      () => SafetensorsReader.open(`${dir}/empty`),
      (e: unknown) => e instanceof UserError && e.message.includes("missing.safetensors"),
    );
  });
});
