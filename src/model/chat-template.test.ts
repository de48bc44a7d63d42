import { describe, expect, it } from "vitest";
import { ChatTemplateError } from "../errors.js";
import { renderChatTemplate } from "./chat-template.js";

// ChatML as in Qwen2 / SmolLM2 tokenizer_config.json (simplified: no tools).
const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Llama-3 Instruct's template (meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json).
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}" +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}" +
  "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const MESSAGES = [
  { role: "system", content: "You are terse." },
  { role: "user", content: " Hi! " },
];

describe("renderChatTemplate", () => {
  it("renders ChatML", () => {
    expect(renderChatTemplate(CHATML, MESSAGES, { addGenerationPrompt: true })).toBe(
      "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n Hi! <|im_end|>\n<|im_start|>assistant\n",
    );
    expect(renderChatTemplate(CHATML, MESSAGES)).not.toContain("assistant");
  });

  it("renders llama-3 with its BOS and trimmed contents", () => {
    expect(renderChatTemplate(LLAMA3, MESSAGES, { addGenerationPrompt: true, bosToken: "<|begin_of_text|>" })).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    );
  });

  it("throws ChatTemplateError for a template that does not parse", () => {
    expect(() => renderChatTemplate("{% for m in messages %}{{ m.content }}", MESSAGES)).toThrow(ChatTemplateError);
    try {
      renderChatTemplate("{% if %}", MESSAGES);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ChatTemplateError);
      expect((e as ChatTemplateError).details.phase).toBe("parse");
    }
  });

  it("throws ChatTemplateError when the template raises", () => {
    const strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
    try {
      renderChatTemplate(strict, MESSAGES);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ChatTemplateError);
      expect((e as ChatTemplateError).details.phase).toBe("render");
      expect((e as Error).message).toContain("Conversation must start with user");
    }
    expect(renderChatTemplate(strict, [{ role: "user", content: "x" }])).toBe("ok");
  });
});
