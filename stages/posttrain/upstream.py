"""The chat template of post-training over the pipeline's tokenizer (an upstream
`tokenizer` artifact)."""

from stages.posttrain.chat import ChatTemplate


def chat_template(tokenizer) -> ChatTemplate:
    return ChatTemplate(tokenizer.load())
