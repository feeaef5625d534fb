// safetensors reader (F32/F16/BF16 → Float32Array, streamed per tensor) and writer (F32/BF16, sharded).
import { UserError } from "../pipeline/errors.ts";

/** Element types we read. */
export type SafetensorsDtype = "F32" | "F16" | "BF16";

/** What we write: f32 or bf16. */
export type SaveDtype = "f32" | "bf16";

const BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Where one tensor lies. */
export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in `file`. */
  begin: number;
  byteLength: number;
}

/** Name of the index file of a sharded checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";
/** Name of a single-file checkpoint. */
export const SINGLE_FILE = "model.safetensors";

interface OpenFile {
  path: string;
  file: Deno.FsFile;
  metadata: Record<string, string>;
}

function bad(path: string, msg: string): never {
  throw new UserError(
    `${path}: ${msg}`,
    "the safetensors file is damaged or not a safetensors file",
  );
}

async function readExactly(f: Deno.FsFile, buf: Uint8Array, path: string): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) bad(path, "unexpected end of file");
    got += n;
  }
}

/** Convert IEEE half-precision bits to a number. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Convert bfloat16 bits to a number. */
export function bf16ToF32(b: number): number {
  const u = new Uint32Array([(b & 0xffff) << 16]);
  return new Float32Array(u.buffer)[0];
}

/** Round f32 values to bfloat16 bits (round to nearest, ties to even; NaN stays NaN). */
export function f32ToBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < u.length; i++) {
    const v = u[i];
    if ((v & 0x7f800000) === 0x7f800000 && (v & 0x7fffff) !== 0) {
      out[i] = (v >>> 16) | 0x40;
    } else {
      out[i] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return out;
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = f16ToF32(i);
  return t;
})();

/**
 * Reads tensors from one safetensors file or a checkpoint directory (single file or sharded with
 * model.safetensors.index.json). Each `read` seeks and reads only that tensor's bytes.
 */
export class SafetensorsReader {
  private constructor(
    readonly source: string,
    private readonly files: OpenFile[],
    private readonly infos: Map<string, TensorInfo>,
  ) {}

  /** Open a .safetensors file, or a directory holding model.safetensors or the sharded index. */
  static async open(path: string): Promise<SafetensorsReader> {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(path);
    } catch {
      throw new UserError(`${path}: no such file or directory`);
    }
    if (stat.isFile) {
      const f = await openOne(path);
      return new SafetensorsReader(path, [f.open], f.infos);
    }
    const dir = path.replace(/\/+$/, "");
    const indexPath = `${dir}/${INDEX_FILE}`;
    let indexText: string | null = null;
    try {
      indexText = await Deno.readTextFile(indexPath);
    } catch {
      indexText = null;
    }
    if (indexText === null) {
      const single = `${dir}/${SINGLE_FILE}`;
      try {
        await Deno.stat(single);
      } catch {
        throw new UserError(
          `${dir}: neither ${SINGLE_FILE} nor ${INDEX_FILE} found`,
          "point at a Hugging Face model directory with safetensors weights",
        );
      }
      const f = await openOne(single);
      return new SafetensorsReader(dir, [f.open], f.infos);
    }
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(indexText);
    } catch (e) {
      throw new UserError(`${indexPath}: not valid JSON (${(e as Error).message})`);
    }
    const wm = index.weight_map;
    if (typeof wm !== "object" || wm === null) bad(indexPath, "missing 'weight_map'");
    const shardNames = [...new Set(Object.values(wm))].sort();
    const files: OpenFile[] = [];
    const infos = new Map<string, TensorInfo>();
    try {
      for (const s of shardNames) {
        if (typeof s !== "string" || s.includes("/") || s.includes("\\")) {
          bad(indexPath, `bad shard name ${JSON.stringify(s)}`);
        }
        const f = await openOne(`${dir}/${s}`);
        files.push(f.open);
        for (const [name, info] of f.infos) infos.set(name, info);
      }
      for (const [name, shard] of Object.entries(wm)) {
        const info = infos.get(name);
        if (!info || !info.file.endsWith(`/${shard}`)) {
          bad(indexPath, `weight_map says '${name}' is in ${shard}, but it is not there`);
        }
      }
    } catch (e) {
      for (const f of files) f.file.close();
      throw e;
    }
    return new SafetensorsReader(dir, files, infos);
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return [...this.infos.keys()].sort();
  }

  /** Whether the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.infos.has(name);
  }

  /** Location, dtype and shape of `name`, or undefined. */
  info(name: string): TensorInfo | undefined {
    return this.infos.get(name);
  }

  /** `__metadata__` of the first file. */
  get metadata(): Record<string, string> {
    return this.files[0]?.metadata ?? {};
  }

  /** Read one tensor as f32 (F32 bytes land directly in the result; F16/BF16 are widened). */
  async read(name: string): Promise<Float32Array> {
    const info = this.infos.get(name);
    if (!info) throw new UserError(`${this.source}: no tensor named '${name}'`);
    const f = this.files.find((o) => o.path === info.file)!;
    const n = info.shape.reduce((a, b) => a * b, 1);
    await f.file.seek(info.begin, Deno.SeekMode.Start);
    if (info.dtype === "F32") {
      const out = new Float32Array(n);
      await readExactly(f.file, new Uint8Array(out.buffer), info.file);
      return out;
    }
    if (info.dtype === "F16" || info.dtype === "BF16") {
      const raw = new Uint16Array(n);
      await readExactly(f.file, new Uint8Array(raw.buffer), info.file);
      const out = new Float32Array(n);
      if (info.dtype === "F16") {
        for (let i = 0; i < n; i++) out[i] = F16_TABLE[raw[i]];
      } else {
        const u = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) u[i] = raw[i] << 16;
      }
      return out;
    }
    throw new UserError(
      `${info.file}: tensor '${name}' has dtype ${info.dtype}; only F32, F16 and BF16 are supported`,
    );
  }

  /** Close every file. */
  close(): void {
    for (const f of this.files) {
      try {
        f.file.close();
      } catch { /* already closed */ }
    }
  }
}

async function openOne(path: string): Promise<{ open: OpenFile; infos: Map<string, TensorInfo> }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new UserError(`${path}: cannot open (${(e as Error).message})`);
  }
  try {
    const size = (await file.stat()).size;
    if (size < 8) bad(path, "shorter than a safetensors header");
    const lenBuf = new Uint8Array(8);
    await readExactly(file, lenBuf, path);
    const headerLen = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
    if (headerLen > 100_000_000 || 8 + headerLen > size) {
      bad(path, `header length ${headerLen} is invalid`);
    }
    const hbuf = new Uint8Array(headerLen);
    await readExactly(file, hbuf, path);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder().decode(hbuf));
    } catch (e) {
      bad(path, `header is not JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    const infos = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(header)) {
      if (name === "__metadata__") {
        metadata = (v ?? {}) as Record<string, string>;
        continue;
      }
      const t = v as { dtype?: string; shape?: number[]; data_offsets?: number[] };
      const eb = BYTES[t.dtype ?? ""];
      if (!eb) bad(path, `tensor '${name}' has unknown dtype ${JSON.stringify(t.dtype)}`);
      if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        bad(path, `tensor '${name}' has a bad shape`);
      }
      const [b, e] = t.data_offsets ?? [];
      const n = t.shape.reduce((a, c) => a * c, 1);
      if (
        !Number.isInteger(b) || !Number.isInteger(e) || b < 0 || e > dataSize || e - b !== n * eb
      ) {
        bad(path, `tensor '${name}' has bad data_offsets ${JSON.stringify(t.data_offsets)}`);
      }
      infos.set(name, {
        name,
        dtype: t.dtype!,
        shape: t.shape,
        file: path,
        begin: dataStart + b,
        byteLength: e - b,
      });
    }
    return { open: { path, file, metadata }, infos };
  } catch (e) {
    file.close();
    throw e;
  }
}

/** A tensor to write: its data now, or a function producing it when its turn comes (streaming). */
export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array | (() => Promise<Float32Array> | Float32Array);
}

function headerBytes(
  entries: { name: string; dtype: string; shape: number[]; bytes: number }[],
  metadata: Record<string, string>,
): Uint8Array {
  const h: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const e of entries) {
    h[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.bytes] };
    off += e.bytes;
  }
  let text = JSON.stringify(h);
  const pad = (8 - (new TextEncoder().encode(text).length % 8)) % 8;
  text += " ".repeat(pad);
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await f.write(bytes.subarray(off));
}

function tensorBytes(t: TensorToWrite, dtype: SaveDtype): number {
  return t.shape.reduce((a, b) => a * b, 1) * (dtype === "f32" ? 4 : 2);
}

/**
 * Write one safetensors file (through a temporary file renamed into place). Tensors are
 * materialised one at a time, so lazy `data` functions keep memory at one tensor.
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: TensorToWrite[],
  dtype: SaveDtype,
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const st = dtype === "f32" ? "F32" : "BF16";
  const entries = tensors.map((t) => ({
    name: t.name,
    dtype: st,
    shape: t.shape,
    bytes: tensorBytes(t, dtype),
  }));
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`safetensors: duplicate tensor '${t.name}'`);
    names.add(t.name);
  }
  const tmp = `${path}.tmp-${Deno.pid}`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeAll(f, headerBytes(entries, metadata));
    for (const t of tensors) {
      const data = typeof t.data === "function" ? await t.data() : t.data;
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== n) {
        throw new Error(
          `safetensors: '${t.name}' has ${data.length} values, shape [${t.shape}] needs ${n}`,
        );
      }
      const CH = 1 << 22;
      for (let i = 0; i < n; i += CH) {
        const part = data.subarray(i, Math.min(n, i + CH));
        const bytes = dtype === "f32"
          ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength)
          : new Uint8Array(f32ToBf16(part).buffer);
        await writeAll(f, bytes);
      }
    }
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  await Deno.rename(tmp, path);
}

/**
 * Write a checkpoint's weights into `dir`: model.safetensors, or, when the data exceeds `shardBytes`,
 * model-0000i-of-0000n.safetensors plus model.safetensors.index.json (tensors kept in order; a tensor
 * larger than shardBytes gets a shard of its own). Returns the file names written.
 */
export async function writeSafetensorsDir(
  dir: string,
  tensors: TensorToWrite[],
  opts: { dtype: SaveDtype; shardBytes?: number },
): Promise<string[]> {
  const limit = opts.shardBytes ?? Infinity;
  const shards: TensorToWrite[][] = [];
  let cur: TensorToWrite[] = [];
  let curBytes = 0;
  let total = 0;
  for (const t of tensors) {
    const b = tensorBytes(t, opts.dtype);
    total += b;
    if (cur.length > 0 && curBytes + b > limit) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(t);
    curBytes += b;
  }
  if (cur.length > 0) shards.push(cur);
  if (shards.length <= 1) {
    await writeSafetensorsFile(`${dir}/${SINGLE_FILE}`, tensors, opts.dtype);
    return [SINGLE_FILE];
  }
  const n = shards.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    await writeSafetensorsFile(`${dir}/${name}`, shards[i], opts.dtype);
    for (const t of shards[i]) weightMap[t.name] = name;
    names.push(name);
  }
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  await Deno.writeTextFile(`${dir}/${INDEX_FILE}`, JSON.stringify(index, null, 2) + "\n");
  names.push(INDEX_FILE);
  return names;
}
