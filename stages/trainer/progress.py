"""Progress lines for long training loops: the step out of the total, the share done and
an ETA from the steps made so far in this process (a resumed run counts from its resume
step), so the Airflow task log, which streams the stage's output, shows how far it is."""

import time


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 85 -> '1m25s', 7.3 -> '7s'."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    def __init__(self, total_steps: int, start_step: int = 0, clock=time.monotonic):
        self.total, self.start_step, self.clock = total_steps, start_step, clock
        self.started = clock()

    def eta_seconds(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return (self.clock() - self.started) / done * (self.total - step)

    def prefix(self, step: int) -> str:
        """'step 20/200 (10%, ETA 1m25s)'."""
        eta = self.eta_seconds(step)
        timing = f", ETA {duration(eta)}" if eta is not None and step < self.total else ""
        return f"step {step}/{self.total} ({100 * step // max(self.total, 1)}%{timing})"
