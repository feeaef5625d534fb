// Chat templates: the tokenizer's own, a shipped one (pipeline/templates/*.jinja) or a user .jinja file.
import { UserError } from "./errors.ts";
import { type ChatMessage, compileTemplate, type Tokenizer } from "../model/tokenizer.ts";

/** Names of the templates shipped in pipeline/templates/. */
export const SHIPPED_TEMPLATES = ["chatml", "granite", "ibm_generic", "plain"] as const;

/** A resolved chat template: where it came from and its Jinja source. */
export interface ChatTemplate {
  /** "tokenizer", a shipped name, or the file path. */
  name: string;
  source: string;
}

/** Jinja source of a shipped template by name. */
export function shippedTemplate(name: string): string {
  if (!(SHIPPED_TEMPLATES as readonly string[]).includes(name)) {
    throw new UserError(
      `unknown chat template '${name}'`,
      `use one of ${SHIPPED_TEMPLATES.join(", ")}, 'tokenizer', or a path to a .jinja file`,
    );
  }
  return Deno.readTextFileSync(new URL(`./templates/${name}.jinja`, import.meta.url));
}

/**
 * Resolve a chat_template setting: undefined/"tokenizer"/"auto" → the tokenizer's own (null when it
 * has none), a shipped name → pipeline/templates/<name>.jinja, anything with a '/' or ending in
 * .jinja → that file. The template is compiled once here so a syntax error surfaces early.
 */
export function resolveChatTemplate(
  spec: string | undefined | null,
  tokenizer: Pick<Tokenizer, "chatTemplate">,
): ChatTemplate | null {
  let t: ChatTemplate | null;
  if (
    spec === undefined || spec === null || spec === "" || spec === "tokenizer" || spec === "auto"
  ) {
    t = tokenizer.chatTemplate === null
      ? null
      : { name: "tokenizer", source: tokenizer.chatTemplate };
  } else if (spec.includes("/") || spec.endsWith(".jinja")) {
    let source: string;
    try {
      source = Deno.readTextFileSync(spec);
    } catch (e) {
      throw new UserError(`cannot read chat template file ${spec}: ${(e as Error).message}`);
    }
    t = { name: spec, source };
  } else {
    t = { name: spec, source: shippedTemplate(spec) };
  }
  if (t) compileTemplate(t.source);
  return t;
}

/** Render `messages` with a resolved template and the tokenizer's special-token variables. */
export function renderWith(
  tokenizer: Tokenizer,
  template: ChatTemplate,
  messages: ChatMessage[],
  addGenerationPrompt: boolean,
): string {
  return tokenizer.renderChat(messages, { template: template.source, addGenerationPrompt });
}
