// Tokenize worker: loads the tokenizer once, then encodes chunks of samples for pipeline/tokenize.ts.
/// <reference lib="deno.worker" />
import { loadTokenizer, type Tokenizer } from "../model/tokenizer.ts";
import { type ChatTemplate } from "./chat_template.ts";
import {
  type LimitOptions,
  processChunk,
  type WorkerReply,
  type WorkerRequest,
} from "./tokenize.ts";

let ready: Promise<{ tok: Tokenizer; template: ChatTemplate | null; limits: LimitOptions }> | null =
  null;

self.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const msg = e.data;
  if (msg.type === "init") {
    ready = loadTokenizer(msg.tokenizerDir).then((tok) => ({
      tok,
      template: msg.template,
      limits: msg.limits,
    }));
    return;
  }
  try {
    if (!ready) throw new Error("tokenize worker got a job before init");
    const { tok, template, limits } = await ready;
    const result = processChunk(tok, template, msg.items, limits);
    self.postMessage({ type: "result", id: msg.id, result } satisfies WorkerReply);
  } catch (err) {
    self.postMessage(
      { type: "fatal", id: msg.id, message: (err as Error).message } satisfies WorkerReply,
    );
  }
};
