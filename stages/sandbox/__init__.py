"""Run untrusted code (a model's answer) so that it can neither forge its verdict nor
reach the machine.

The verdict is decided here, never in the sandbox: `judge` runs the TRUSTED tests in this
process and gives them stand-ins for the candidate's functions. Each call is sent to the
sandboxed worker as plain data, runs the candidate's function there, and only its result
comes back, as plain data decoded strictly. The worker never sees the tests or the
expected values, so a candidate passes only by computing the right results.

- verdict.py     judge(): trusted tests + sandboxed calls -> SandboxResult
- process.py     the host side of one sandbox: spawn, calls under a deadline, kill
- probe.py       which isolation this machine allows (probed once per process)
- isolation.py   what each isolation mode contains, the jail's contents, the limits
- plain_data.py  the one encoding results come back in, decoded strictly
- bootstrap.py   the sandbox's first process: namespaces, jail, uid, limits (stdlib only)
- worker.py      runs the candidate's program and answers calls (stdlib only)
"""

from stages.sandbox.verdict import SandboxResult, judge

__all__ = ["SandboxResult", "judge"]
