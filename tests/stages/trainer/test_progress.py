"""The progress prefix of the training loops' log lines: step of total, share done, ETA
from this process's own pace (a resumed run does not count the steps it skipped)."""

from stages.trainer.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_eta_from_the_pace_since_start_or_resume():
    clock = Clock()
    progress = Progress(200, start_step=100, clock=clock)
    assert progress.prefix(100) == "step 100/200 (50%)"          # no step made yet: no ETA
    clock.now += 30                                               # 10 steps in 30 s
    assert progress.eta_seconds(110) == 270                       # 90 left at 3 s each
    assert progress.prefix(110) == "step 110/200 (55%, ETA 4m30s)"
    clock.now += 270
    assert progress.prefix(200) == "step 200/200 (100%)"


def test_durations_read_naturally():
    assert [duration(s) for s in (7.3, 85, 3725, -1)] == ["7s", "1m25s", "1h02m", "0s"]
