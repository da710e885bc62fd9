"""The DeepSeek-V3 chat template, as token ids with a loss mask.

    {bos}{system}<｜User｜>{user}<｜Assistant｜>{assistant}<｜end▁of▁sentence｜><｜User｜>...

(REFERENCE.md, "Post-training"). Role markers and the end-of-sentence token are single
special tokens of our tokenizer (beam_jobs/train_tokenizer.py), so they are added as ids,
never parsed out of text. The loss mask is 1 on each assistant reply and the EOS that ends
it: SFT learns to answer, and to stop, but never to write the user's turn.
"""

from beam_jobs.train_tokenizer import ASSISTANT, BOS, EOS, PAD, USER


class ChatTemplate:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(token) for name, token in
               (("bos", BOS), ("eos", EOS), ("pad", PAD), ("user", USER), ("assistant", ASSISTANT))}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(missing)} token: it was not trained by "
                             "beam_jobs.train_tokenizer")
        self.bos_id, self.eos_id, self.pad_id = ids["bos"], ids["eos"], ids["pad"]
        self.user_id, self.assistant_id = ids["user"], ids["assistant"]

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_conversation(self, messages: list[dict], name: str = "conversation") -> tuple[list[int], list[int]]:
        """messages: [{"role": "system"|"user"|"assistant", "content": str}, ...], an optional
        system message first, then user/assistant turns alternating, ending with the
        assistant. Returns (token ids, loss mask)."""
        ids, mask = [self.bos_id], [0]
        turns = list(messages)
        if turns and turns[0].get("role") == "system":
            system = self.text_ids(turns.pop(0)["content"])
            ids += system
            mask += [0] * len(system)
        if not turns or len(turns) % 2:
            raise ValueError(f"{name}: needs user/assistant pairs, got {len(turns)} turns after the system message")
        for index, turn in enumerate(turns):
            expected = "user" if index % 2 == 0 else "assistant"
            if turn.get("role") != expected or not isinstance(turn.get("content"), str):
                raise ValueError(f"{name}: message {index} should be a {expected} message with text content, "
                                 f"got role {turn.get('role')!r}")
            if expected == "user":
                part = [self.user_id, *self.text_ids(turn["content"]), self.assistant_id]
                ids += part
                mask += [0] * len(part)
            else:
                part = [*self.text_ids(turn["content"]), self.eos_id]
                ids += part
                mask += [1] * len(part)
        return ids, mask

    def encode_prompt(self, user: str, system: str | None = None) -> list[int]:
        """A generation prompt: the conversation so far, ending with the assistant marker."""
        system_ids = self.text_ids(system) if system else []
        return [self.bos_id, *system_ids, self.user_id, *self.text_ids(user), self.assistant_id]

    def decode_reply(self, ids: list[int]) -> str:
        """Generated ids -> the reply's text, special reasoning markers (<think>) kept,
        cut at the first EOS."""
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=False)
