"""Typed job parameters: each job's parameters are one frozen dataclass (a subclass of
JobParams) whose validate() holds every check on them, in one place. A caller in the same
process builds the dataclass and calls the job's `run(params, beam_args)`; the job's
command line derives its arguments from the same dataclass (parse_args below), so both
paths build, and validate, the same object.

Fields are declared with `param(...)`: the help text, and optionally the command-line
flag (default --field-name), choices, a minimum, and a parser for values that are not a
plain str/int/float (e.g. NAME=WEIGHT lists, JSON objects). Errors are ParamError, a
ValueError that names the parameter ("bands: bands x rows = 21 x 6 = 126 exceeds
num_perm 120")."""

import argparse
import dataclasses
import types
import typing

from beam_jobs import options


class ParamError(ValueError):
    """A bad parameter value; `name` is the field ("threshold", "text.min_words")."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def param(default=dataclasses.MISSING, *, help: str, flag: str | None = None, choices=None,
          minimum=None, parse=None, show: str | None = None, factory=dataclasses.MISSING):
    """A job parameter field. `parse(str) -> value` reads it from the command line
    (default: the annotation's str/int/float); `show` is how --help prints the default."""
    metadata = {"help": help, "flag": flag, "choices": choices, "minimum": minimum, "parse": parse, "show": show}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class JobParams:
    """Base of the jobs' parameter dataclasses (declares no fields)."""

    def __post_init__(self):
        # A list given for a tuple field (e.g. input=[...]) is stored as a tuple, so the
        # object is immutable and compares equal however it was built.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and typing.get_origin(_hints(type(self))[f.name]) is tuple:
                object.__setattr__(self, f.name, tuple(value))

    def validate(self) -> "JobParams":
        """Raise ParamError naming the first bad parameter; returns self."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and value in ("", (), [], None):
                raise ParamError(f.name, "required")
            if hints[f.name] is str and not isinstance(value, str):
                raise ParamError(f.name, f"expected a string, got {value!r}")
            if typing.get_origin(hints[f.name]) is tuple and (
                    not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value)):
                raise ParamError(f.name, f"expected a list of non-empty strings, got {value!r}")
            number = _number_type(hints[f.name])
            if number is not None and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float) if number is float else int):
                    raise ParamError(f.name, f"expected {'a number' if number is float else 'an integer'}, "
                                             f"got {value!r}")
            if meta.get("choices") and value not in meta["choices"]:
                raise ParamError(f.name, f"expected one of {', '.join(meta['choices'])}, got {value!r}")
            if meta.get("minimum") is not None and value is not None and value < meta["minimum"]:
                raise ParamError(f.name, f"must be >= {meta['minimum']}, got {value}")
        self.check()
        return self

    def check(self) -> None:
        """Checks that involve more than one field or more than a minimum (override)."""


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _number_type(t):
    """int or float for `int`, `float`, `int | None`, `float | None`; else None."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        options_ = [a for a in typing.get_args(t) if a is not type(None)]
        t = options_[0] if len(options_) == 1 else None
    return t if t in (int, float) else None


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _argparse_type(parse):
    """A parser whose ValueError becomes argparse's "argument --x: <message>"."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def parser(cls, prog: str, description: str, beam: bool = True) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of `cls` (dest = the field name)."""
    epilog = options.EPILOG if beam else None
    summary = " ".join(description.strip().split("\n\n")[0].split())   # the docstring's first paragraph
    p = argparse.ArgumentParser(prog=prog, description=summary, epilog=epilog)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        t, meta = hints[f.name], f.metadata
        kwargs: dict = {"dest": f.name, "help": meta.get("help", ""),
                        "metavar": flag_of(f).lstrip("-").upper().replace("-", "_")}
        if meta.get("parse"):
            kwargs["type"] = _argparse_type(meta["parse"])
        elif typing.get_origin(t) is tuple:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: a repeatable argument must be required")
            kwargs.update(action="append", type=str)
            kwargs["help"] += " (repeatable)"
        elif _number_type(t) is not None:
            kwargs["type"] = _number_type(t)
        elif t is not str:
            raise TypeError(f"{cls.__name__}.{f.name}: give param(parse=...) for type {t}")
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
            del kwargs["metavar"]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if kwargs.get("action") != "append":
                kwargs["default"] = default
            shown = meta.get("show") or (None if default is None else str(default))
            if shown:
                kwargs["help"] += f" (default: {shown})"
        p.add_argument(flag_of(f), **kwargs)
    return p


def parse_args(cls, argv, prog: str, description: str, beam: bool = True):
    """argv -> (validated `cls` instance, the remaining Beam pipeline options). A bad
    value is an argparse error naming the flag (exit status 2). With beam=False an
    unknown argument is an error too."""
    p = parser(cls, prog, description, beam)
    if beam:
        args, beam_args = p.parse_known_args(argv)
    else:
        args, beam_args = p.parse_args(argv), []
    try:
        params = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}).validate()
    except ParamError as e:
        flags = {f.name: flag_of(f) for f in dataclasses.fields(cls)}
        top = e.name.split(".")[0]
        p.error(f"argument {flags[top]}: {e.message if e.name == top else e}" if top in flags else str(e))
    return params, beam_args


def check_settings(cls, settings, key: str, error=ValueError, **values) -> None:
    """Validate a stage's config section `settings` with the job's own checks: its fields
    that are also fields of `cls` (plus `values`) are checked as the job checks them;
    the paths a stage fills in at run time (required string fields) are stand-ins here.
    Raises `error("KEY.FIELD: message")`."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
    given.update(values)
    for f in dataclasses.fields(cls):
        if f.name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            t = _hints(cls)[f.name]
            given[f.name] = ("<set at run time>",) if typing.get_origin(t) is tuple else "<set at run time>"
    try:
        cls(**given).validate()
    except ParamError as e:
        raise error(f"{key}.{e.name}: {e.message}") from None
