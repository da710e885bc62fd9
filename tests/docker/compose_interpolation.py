"""Docker Compose's variable interpolation, as the Compose specification describes it
(and compose-go implements it), for testing docker/compose.yaml where no `docker
compose` is installed: `$$` is a literal `$`; `$VAR` and `${VAR}`; `${VAR:-default}`
(unset or empty), `${VAR-default}` (unset); `${VAR:?message}` and `${VAR?message}` stop
with "required variable VAR is missing a value: message"; `${VAR:+other}`,
`${VAR+other}`; defaults and messages may nest `${...}`. Every string value in the
file is interpolated, extension fields (x-*) too; keys are not."""

import re

NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")


class MissingVariable(Exception):
    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"required variable {name} is missing a value" + (f": {message}" if message else ""))


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"no closing brace in {text!r}")


def _expand(body: str, env: dict[str, str]) -> str:
    match = re.fullmatch(r"([_a-zA-Z][_a-zA-Z0-9]*)(?:(:?[-?+])(.*))?", body, re.S)
    if match is None:
        raise ValueError(f"invalid interpolation format: ${{{body}}}")
    name, operator, argument = match.groups()
    value = env.get(name)
    if operator is None:
        return value or ""
    missing = not value if operator.startswith(":") else value is None
    if operator.endswith("-"):
        return interpolate(argument, env) if missing else value
    if operator.endswith("?"):
        if missing:
            raise MissingVariable(name, interpolate(argument, env))
        return value
    return "" if missing else interpolate(argument, env)   # + : the other value when set


def interpolate(text: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 1)
            out.append(_expand(text[i + 2:end], env))
            i = end + 1
        elif match := NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def render(document, env: dict[str, str]):
    """The parsed compose file with every string value interpolated."""
    if isinstance(document, dict):
        return {key: render(value, env) for key, value in document.items()}
    if isinstance(document, list):
        return [render(value, env) for value in document]
    if isinstance(document, str):
        return interpolate(document, env)
    return document


def references(text: str) -> list[tuple[str, str]]:
    """(NAME, operator) of every ${NAME...} in `text` that Compose expands (not $${...})."""
    tokens = re.finditer(r"\$\$|\$\{([_a-zA-Z][_a-zA-Z0-9]*)(:?[-?+])?", text)   # $$ taken first, left to right
    return [(m.group(1), m.group(2) or "") for m in tokens if m.group(1)]
