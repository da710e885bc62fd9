"""The parallelism planner: sizes a layout (EP x PP x DP, ZeRO, a pipeline schedule) for
a model config before anything runs (`seekforge plan`, stages/plan_commands.py).

  schedules.py      1F1B, ZB1P (ZB-H1) and DualPipe as ordered passes per device
  timeline.py       event simulation of a schedule: start/end times, bubbles, in-flight activations
  picture.py        the simulated timeline drawn like the DeepSeek-V3 paper's Figure 5
  layout.py         ParallelLayout, its validation, and the split of layers into stages
  precision.py      training recipes: bytes per state, activation caching, recomputation
  activations.py    activation bytes per token per layer, derived from the shapes
  memory.py         per-device memory (memory_plan) and the MLA KV cache
  communication.py  expert all-to-all (naive vs node-limited), ZeRO traffic, pipeline sends
  costs.py          per-layer compute costs: measured JSON or a FLOPs roofline
  step_time.py      the schedule simulated with those costs + communication
  plan.py, report.py  everything together, and as text
"""
